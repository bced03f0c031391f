"""Options as data: one dataclass per task (or option group) is the single source of defaults, choices and help.

A field is declared with :func:`option`; from the dataclass this module generates

- the ``argparse`` arguments of a command (:func:`add_arguments`, :func:`from_namespace`),
- the TOML/JSON reader with type checks and close-match hints (:func:`from_dict`),
- the validation of choices and ranges (:func:`validate`),

so the CLI default, the audit default and the config-file default of an option are the same object.
Nothing here imports torch, numpy or a pipeline: ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

from .._checks import ClipauditError, check_choice, close_matches

__all__ = ["option", "add_arguments", "from_namespace", "from_dict", "to_dict", "validate", "flag_of",
           "option_fields", "describe_default"]

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, *, help: str, factory: Callable[[], Any] | None = None,
           choices: Iterable[Any] | None = None, flag: str | None = None, short: str | None = None,
           metavar: str | None = None, nargs: str | None = None, parse: Callable[[str], Any] | None = None,
           low: float | None = None, high: float | None = None, cli: bool = True,
           aliases: Iterable[str] = (), default_text: str | None = None) -> Any:
    """A dataclass field with what the CLI, the config reader and the validator need.

    Parameters
    ----------
    default, factory
        The default value (``factory`` for mutable defaults such as lists).
    help : str
        One sentence for ``--help``; the default is appended automatically.
    choices : iterable, optional
        Accepted values (checked on every path, with a close-match hint).
    flag, short : str, optional
        Command-line spelling (default: ``--field-name``) and a short alias such as ``-m``.
    metavar, nargs : str, optional
        Passed to argparse (lists default to ``nargs="+"``).
    parse : callable, optional
        Turns the command-line string into the value (e.g. ``'0-39;40-79'`` -> index groups).
    low, high : float, optional
        Inclusive bounds for numbers (``None`` values are always accepted for optional fields).
    cli : bool, default=True
        False keeps the option out of the command line (config files only).
    aliases : iterable of str
        Further command-line spellings (old names kept working).
    default_text : str, optional
        How ``--help`` shows the default when its value says little (``None`` meaning "all").
    """
    meta = {"aliases": tuple(aliases), "default_text": default_text, "help": help,
            "choices": None if choices is None else tuple(choices), "flag": flag, "short": short,
            "metavar": metavar, "nargs": nargs, "parse": parse, "low": low, "high": high, "cli": cli}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of an options dataclass, in declaration order."""
    return list(dataclasses.fields(cls))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not _MISSING else f.default  # type: ignore[misc]


def flag_of(f: dataclasses.Field, prefix: str = "") -> str:
    """The command-line flag of a field (``--target-accuracy``; with a prefix ``--confidence-target-accuracy``)."""
    base = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    return "--" + prefix + base[2:] if prefix else base


def describe_default(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return " ".join(map(str, value)) or "(empty)"
    return str(value)


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def add_arguments(parser: argparse.ArgumentParser | Any, cls: type, *, prefix: str = "",
                  title: str | None = None, dest_prefix: str = "", aliases: dict[str, list[str]] | None = None,
                  skip: Iterable[str] = ()) -> None:
    """Add one argument per field of ``cls`` to ``parser`` (or an argument group), default SUPPRESS.

    Defaults are not stored in the namespace: :func:`from_namespace` applies only what was given on top
    of a base options object, so the dataclass stays the one place defaults live. ``prefix`` is put in
    front of every flag (``--confidence-n-boot``), ``aliases`` adds flags per field name, ``skip`` leaves
    fields out.
    """
    hints = _hints(cls)
    group = parser.add_argument_group(title) if title else parser
    skip = set(skip)
    for f in option_fields(cls):
        meta = f.metadata
        if not meta.get("cli", True) or f.name in skip or "help" not in meta:
            continue
        hint = _strip_optional(hints[f.name])
        flags = [flag_of(f, prefix)]
        if meta.get("short") and not prefix:
            flags.append(meta["short"])
        flags += (aliases or {}).get(f.name, [])
        if not prefix:
            flags += list(meta.get("aliases", ()))
        default = _default(f)
        text = meta["help"]
        if meta.get("choices") and not meta.get("parse"):
            text += f" ({', '.join(map(str, meta['choices']))})"
        text += f"; default: {meta.get('default_text') or describe_default(default)}"
        kwargs: dict[str, Any] = {"dest": dest_prefix + f.name, "default": argparse.SUPPRESS,
                                  "help": text.replace("%", "%%")}
        if hint is not bool:
            kwargs["metavar"] = meta.get("metavar") or f.name.upper()
        if hint is bool:  # --x/--no-x; a negative name ('no_cache') is a plain switch
            kwargs["action"] = "store_true" if f.name.startswith("no_") else argparse.BooleanOptionalAction
        elif meta.get("parse"):  # parsed in from_namespace, so a bad value is one clipaudit error line
            kwargs["type"] = str
        elif typing.get_origin(hint) is list:
            (inner,) = typing.get_args(hint) or (str,)
            kwargs["nargs"] = meta.get("nargs") or "+"
            kwargs["type"] = _strip_optional(inner) if _strip_optional(inner) in (int, float, str) else str
        else:
            kwargs["type"] = hint if hint in (int, float, str) else str
            if meta.get("nargs"):
                kwargs["nargs"] = meta["nargs"]
        group.add_argument(*flags, **kwargs)


def from_namespace(base: Any, ns: argparse.Namespace, *, dest_prefix: str = "", where: str = "") -> Any:
    """``base`` with every option given on the command line (present in ``ns``) applied, then validated."""
    given = vars(ns)
    changes = {}
    for f in option_fields(type(base)):
        if dest_prefix + f.name in given:
            value = given[dest_prefix + f.name]
            parse = f.metadata.get("parse")
            changes[f.name] = parse(value) if parse and isinstance(value, str) else value
    out = dataclasses.replace(base, **changes)
    validate(out, where)
    return out


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def from_dict(cls: type, data: Any, where: str = "", *, base: Any = None) -> Any:
    """An options object from a config table (TOML/JSON), type-checked; unknown keys get a close match.

    Nested dataclass fields are read recursively. Keys absent from ``data`` keep ``base``'s value (default:
    the dataclass defaults).
    """
    if not isinstance(data, dict):
        raise ClipauditError(f"config {where or 'table'} must be a table of options, got {data!r}.")
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    base = base if base is not None else cls()
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            near = close_matches(key, names)
            raise ClipauditError(f"Unknown config option {path!r}. Accepted here: {', '.join(names)}."
                                 + (f" Did you mean {', '.join(map(repr, near))}?" if near else ""))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, path, base=getattr(base, key))
            continue
        parse = next(f.metadata.get("parse") for f in dataclasses.fields(cls) if f.name == key)
        if parse and isinstance(value, str):  # the command-line spelling is accepted in files too
            value = parse(value)
        if not _type_ok(value, hint):
            raise ClipauditError(f"config option {path!r} must be {_type_name(hint)}, got {value!r}.")
        kwargs[key] = float(value) if _strip_optional(hint) is float and value is not None else value
    out = dataclasses.replace(base, **kwargs)
    validate(out, where)
    return out


def to_dict(options: Any) -> dict[str, Any]:
    """Plain nested dict of an options object (None kept)."""
    return dataclasses.asdict(options)


def validate(options: Any, where: str = "") -> None:
    """Check choices and bounds declared on the fields; raise one :class:`ClipauditError` naming the option."""
    for f in option_fields(type(options)):
        value = getattr(options, f.name)
        meta = f.metadata
        name = f"{where}.{f.name}" if where else flag_of(f)
        if dataclasses.is_dataclass(value):
            validate(value, name)
            continue
        if value is None:
            continue
        values = value if isinstance(value, list) else [value]
        if meta.get("choices"):
            for v in values:
                check_choice(name, v, meta["choices"])
        for v in values:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                if meta.get("low") is not None and v < meta["low"]:
                    raise ClipauditError(f"{name} must be >= {meta['low']:g}, got {v!r}.")
                if meta.get("high") is not None and v > meta["high"]:
                    raise ClipauditError(f"{name} must be <= {meta['high']:g}, got {v!r}.")
