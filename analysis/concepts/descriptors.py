"""Descriptor pools: the textual concepts visual concepts are matched to (spec §2).

Accepted files (in ``descriptors/`` by name, or any path):

- ``.json`` dict ``{classname: [descriptor, ...]}``: the format of Menon & Vondrick's published
  ``descriptors_<dataset>.json`` files, so those can be dropped in as they are;
- ``.json`` list ``[descriptor, ...]``, or ``.txt`` with one descriptor per line (``#`` starts a comment).

The pool used for matching is the deduplicated union of all descriptors, in file order, encoded as raw
text without a template or class name (the reference's ``*_no_class`` concept classifier).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._checks import ClipauditError, close_matches
from .._io import read_user_json, read_user_text
from ..resources import data_dir

__all__ = ["DescriptorPool", "parse_descriptor_pool", "load_descriptors", "list_descriptor_pools"]

_SUFFIXES = (".json", ".txt")


@dataclass(frozen=True)
class DescriptorPool:
    """A named descriptor pool.

    Attributes
    ----------
    name : str
    descriptors : tuple of str
        Unique descriptors, in order of first appearance: row ``i`` of the pool's text embeddings.
    per_class : dict of str -> tuple of str, optional
        The class -> descriptors mapping when the file had one.
    """

    name: str
    descriptors: tuple[str, ...]
    per_class: dict[str, tuple[str, ...]] | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.descriptors)

    def for_class(self, classname: str) -> tuple[str, ...]:
        """The descriptors listed for ``classname`` (raises with close names if it is not in the file)."""
        if self.per_class is None:
            raise ClipauditError(f"Descriptor pool {self.name!r} is a plain list: it has no per-class entries.")
        if classname not in self.per_class:
            near = close_matches(classname, self.per_class)
            hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
            raise ClipauditError(
                f"Descriptor pool {self.name!r} has no class {classname!r}. It has "
                f"{len(self.per_class)} classes.{hint}"
            )
        return self.per_class[classname]

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(list(self.descriptors)).encode()).hexdigest()[:16]


def parse_descriptor_pool(obj: Any, name: str) -> DescriptorPool:
    """Build a pool from a parsed JSON value (dict class -> list, or list) or a list of lines.

    Parameters
    ----------
    obj : dict or list
    name : str
        Used in error messages and as the pool's name.
    """
    def clean(items: Any, where: str) -> list[str]:
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise ClipauditError(f"{where}: expected a list of strings, got {type(items).__name__}.")
        return [s.strip() for s in items if s.strip()]

    per_class = None
    if isinstance(obj, dict):
        per_class = {str(k): tuple(clean(v, f"{name}[{k!r}]")) for k, v in obj.items()}
        flat = [d for v in per_class.values() for d in v]
    elif isinstance(obj, list):
        flat = clean(obj, name)
    else:
        raise ClipauditError(
            f"{name}: a descriptor pool is a JSON object {{class: [descriptors]}} or a list of strings; "
            f"got {type(obj).__name__}."
        )
    unique = tuple(dict.fromkeys(flat))
    if not unique:
        raise ClipauditError(f"{name}: the descriptor pool is empty.")
    return DescriptorPool(name, unique, per_class)


def list_descriptor_pools() -> list[str]:
    """Names of the pools shipped in the project's ``descriptors/`` folder."""
    try:
        folder = data_dir("descriptors")
    except FileNotFoundError:
        return []
    return sorted(p.stem for p in folder.iterdir() if p.suffix in _SUFFIXES)


def _resolve(name_or_path: str | Path) -> Path:
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if str(name_or_path) in list_descriptor_pools():
        folder = data_dir("descriptors")
        return next(folder / f"{name_or_path}{s}" for s in _SUFFIXES if (folder / f"{name_or_path}{s}").is_file())
    known = list_descriptor_pools()
    near = close_matches(str(name_or_path), known)
    hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
    raise ClipauditError(
        f"Descriptor pool {str(name_or_path)!r} is neither a file nor a shipped pool. Shipped: "
        f"{', '.join(known) or '(none)'}. Files may be .json (dict or list) or .txt.{hint}"
    )


def load_descriptors(name_or_path: str | Path) -> DescriptorPool:
    """Load a descriptor pool by shipped name (``"fashion-mnist"``) or from a ``.json``/``.txt`` path.

    Raises
    ------
    ClipauditError
        Unknown name, unreadable or malformed file, empty pool.
    """
    path = _resolve(name_or_path)
    text = read_user_text(path, "Descriptor pool file")
    if path.suffix == ".json":
        obj = read_user_json(path, "Descriptor pool file", text)
    else:
        obj = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return parse_descriptor_pool(obj, path.stem)
