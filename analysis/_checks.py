"""Input checks shared by the whole package.

Every user-facing error is a :class:`ClipauditError` whose message names the argument (or file,
class, option), says what is accepted, what was received and, where possible, the closest valid
value. The CLI prints these messages without a traceback.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["ClipauditError", "check_choice", "check_positive_int", "check_fraction", "close_matches", "check_device",
           "DEVICES"]

#: Accepted ``--device`` values (``cuda:N`` for any N).
DEVICES = ("cpu", "cuda", "cuda:N", "mps", "auto")
_DEVICE = re.compile(r"^(cpu|cuda|mps|auto|cuda:\d+)$")


class ClipauditError(ValueError):
    """An error caused by user input (a bad option, file, class name, checkpoint...)."""


def close_matches(value: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look like ``value``."""
    choices = [str(c) for c in choices]
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(str(value).lower(), list(lowered), n=n, cutoff=0.5)
    return [lowered[h] for h in hits]


def _hint(value: str, choices: Iterable[str]) -> str:
    near = close_matches(value, choices)
    return f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``; raise a helpful error otherwise."""
    choices = list(choices)
    if value in choices:
        return value
    shown = ", ".join(repr(c) for c in choices[:30]) + (", ..." if len(choices) > 30 else "")
    raise ClipauditError(
        f"{name}={value!r} is not valid. Accepted: {shown}.{_hint(str(value), map(str, choices))}"
    )


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """Check that ``value`` is an int >= 1 (or None when allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClipauditError(f"{name} must be a positive integer, got {value!r}.")
    return value


def check_fraction(name: str, value: Any, *, closed_low: bool = False) -> float:
    """Check that ``value`` is a float in (0, 1] (or [0, 1] with ``closed_low``)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ClipauditError(f"{name} must be a number in (0, 1], got {value!r}.") from None
    low_ok = v >= 0 if closed_low else v > 0
    if not (low_ok and v <= 1):
        interval = "[0, 1]" if closed_low else "(0, 1]"
        raise ClipauditError(f"{name} must be in {interval}, got {value!r}.")
    return v


def check_device(value: Any, name: str = "--device") -> str:
    """Return ``value`` (lower-cased, stripped) if it names a device: cpu, cuda, cuda:N, mps or auto.

    Only the spelling is checked here (no torch import); :func:`analysis.models.load_model` also checks
    that the device exists.
    """
    text = value.strip().lower() if isinstance(value, str) else value
    if not isinstance(text, str) or not _DEVICE.match(text):
        near = ["cuda"] if text == "gpu" else close_matches(str(value), [d for d in DEVICES if d != "cuda:N"])
        hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
        raise ClipauditError(f"{name} {value!r} is not a device. Accepted: {', '.join(DEVICES)} "
                             f"(e.g. cuda:1; auto: cuda if available, else cpu).{hint}")
    return text
