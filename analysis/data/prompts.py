"""Prompt template sets: built-ins from ``open_clip.zero_shot_metadata`` and files in ``prompts/``.

Accepted files:

- ``.txt``: one template per line (``{}`` or ``{c}`` placeholder; ``#`` starts a comment line);
- ``.json``: a list of templates; or CLIP_benchmark's dict keyed by dataset name (pass ``name:key`` or the
  file is used when it has one key); or a per-class dict ``{classname: [prompt, ...]}`` (CuPL style,
  prompts already written out, no placeholder).
"""

from __future__ import annotations

import os
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .._checks import ClipauditError
from .._io import read_user_json, read_user_text
from .._registry import Registry
from ..resources import data_dir
from .base import hash_items

__all__ = ["TemplateSet", "load_templates", "list_template_sets", "TEMPLATE_SETS", "normalise_template"]

_PLACEHOLDERS = ("", "c")


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def normalise_template(template: str, source: str = "template") -> str:
    """Turn CLIP_benchmark's ``{c}`` into ``{}``; require exactly one placeholder and a valid format string.

    Literal braces are written doubled (``{{`` and ``}}``), as in :meth:`str.format`.

    Raises
    ------
    ClipauditError
        Not text, not a valid format string (a single ``{`` or ``}``), or not exactly one placeholder.
    """
    if not isinstance(template, str):
        raise ClipauditError(f"{source}: template {template!r} must be text with one class placeholder '{{}}'.")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ClipauditError(
            f"{source}: template {template!r} is not a valid template ({err}); use '{{}}' or '{{c}}' for the "
            f"class name and write a literal brace doubled ('{{{{' or '}}}}')."
        ) from None
    fields = [(name, spec, conv) for _, name, spec, conv in parts if name is not None]
    if len(fields) != 1 or fields[0][0] not in _PLACEHOLDERS or fields[0][1] or fields[0][2]:
        found = ", ".join(repr("{" + f[0] + "}") for f in fields) or "none"
        raise ClipauditError(
            f"{source}: template {template!r} must contain exactly one class placeholder '{{}}' or '{{c}}' "
            f"(found: {found})."
        )
    return "".join(_escape(text) + ("{}" if name is not None else "") for text, name, _, _ in parts)


@dataclass(frozen=True)
class TemplateSet:
    """A named list of templates (``"a photo of a {}."``), or per-class prompt lists (CuPL).

    For per-class sets ``templates`` is empty and ``per_class`` maps class name -> prompts.
    """

    name: str
    templates: tuple[str, ...] = ()
    per_class: dict[str, tuple[str, ...]] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.templates and not self.per_class:
            raise ClipauditError(f"Prompt set {self.name!r} is empty: it has no templates.")
        object.__setattr__(self, "templates", tuple(normalise_template(t, f"Prompt set {self.name!r}")
                                                    for t in self.templates))

    def __len__(self) -> int:
        return len(self.templates) if self.templates else 1

    def prompts(self, classnames: Sequence[str]) -> list[list[str]]:
        """Prompts per class: ``out[c]`` is the list of prompts for class ``c``."""
        if self.per_class is not None:
            missing = [c for c in classnames if c not in self.per_class or not self.per_class[c]]
            if missing:
                raise ClipauditError(
                    f"Per-class prompt set {self.name!r} has no prompts for class(es) {missing[:5]}."
                )
            return [list(self.per_class[c]) for c in classnames]
        return [[t.format(c) for t in self.templates] for c in classnames]

    def subset(self, indices: Sequence[int], name: str | None = None) -> TemplateSet:
        """Templates ``indices`` as a new set (e.g. the first 40 of the 80 OpenAI templates)."""
        if self.per_class is not None:
            raise ClipauditError(f"Prompt set {self.name!r} is per-class: it cannot be split by template.")
        picked = tuple(self.templates[i] for i in indices)
        return TemplateSet(name or f"{self.name}[{len(picked)}]", picked)

    def fingerprint(self) -> str:
        per_class = None if self.per_class is None else {k: list(v) for k, v in sorted(self.per_class.items())}
        return hash_items(list(self.templates), per_class)


def _from_open_clip(attr: str) -> Callable[[], tuple[str, ...]]:
    def build() -> tuple[str, ...]:
        from open_clip import zero_shot_metadata

        return tuple(t("{}") for t in getattr(zero_shot_metadata, attr))

    return build


#: Built-in template sets: name -> builder of the template tuple.
TEMPLATE_SETS: Registry[Callable[[], tuple[str, ...]]] = Registry("prompt set")
TEMPLATE_SETS.register("openai_imagenet", _from_open_clip("OPENAI_IMAGENET_TEMPLATES"),
                       "the 80 OpenAI ImageNet templates (open_clip.zero_shot_metadata)")
TEMPLATE_SETS.register("simple_imagenet", _from_open_clip("SIMPLE_IMAGENET_TEMPLATES"),
                       "the 7-template subset (open_clip.zero_shot_metadata)")
TEMPLATE_SETS.register("name_only", lambda: ("{}",), "the bare class name")
TEMPLATE_SETS.register("photo", lambda: ("a photo of a {}.",), "the single CLIP prompt 'a photo of a {}.'")


def _load_file(path: Path, key: str | None) -> TemplateSet:
    src = str(path)
    text = read_user_text(path, "Prompt file")
    if path.suffix == ".json":
        data = read_user_json(path, "Prompt file", text)
        if isinstance(data, dict) and key is not None:
            if key not in data:
                raise ClipauditError(f"Prompt file {src!r} has no key {key!r}; keys: {sorted(data)[:20]}.")
            data = data[key]
        elif isinstance(data, dict) and all(isinstance(v, list) for v in data.values()) and len(data) == 1:
            data = next(iter(data.values()))
        if isinstance(data, list):
            return TemplateSet(path.stem, tuple(normalise_template(str(t), src) for t in data))
        if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
            return TemplateSet(path.stem, (), {str(k): tuple(map(str, v)) for k, v in data.items()})
        raise ClipauditError(
            f"Prompt file {src!r}: expected a list of templates or a {{class: [prompts]}} dict."
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    return TemplateSet(path.stem, tuple(normalise_template(ln, src) for ln in lines))


def load_templates(spec: str | os.PathLike[str] | TemplateSet) -> TemplateSet:
    """Load a prompt set by built-in name, by file name in ``prompts/``, or from a path.

    ``FILE.json:KEY`` picks one entry of a CLIP_benchmark-style dict keyed by dataset.
    """
    if isinstance(spec, TemplateSet):
        return spec
    spec = str(spec)
    key = None
    base, sep, maybe_key = spec.rpartition(":")
    if sep and base.endswith(".json"):
        spec, key = base, maybe_key
    if spec in TEMPLATE_SETS:
        return TemplateSet(spec, TEMPLATE_SETS.get(spec)())
    path = Path(spec).expanduser()
    if not path.is_file():
        shipped = _shipped_files()
        if spec in shipped:
            path = shipped[spec]
        else:
            from .._checks import check_choice

            check_choice("prompt set", spec, list_template_sets())
    return _load_file(path, key)


def _shipped_files() -> dict[str, Path]:
    try:
        folder = data_dir("prompts")
    except FileNotFoundError:
        return {}
    return {p.stem: p for p in sorted(folder.glob("*")) if p.suffix in (".txt", ".json")}


def list_template_sets() -> list[str]:
    """Built-in names plus the files shipped in ``prompts/``."""
    return TEMPLATE_SETS.list() + [s for s in _shipped_files() if s not in TEMPLATE_SETS]
