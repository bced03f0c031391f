"""A small name -> object registry with helpful lookup errors."""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ._checks import ClipauditError, close_matches

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(Generic[T]):
    """Maps names to entries (factories, descriptions...).

    ``kind`` is used in error messages, e.g. ``Registry("dataset")`` raises
    "Unknown dataset 'fashoin-mnist'. Known: ... Did you mean 'fashion-mnist'?".
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, entry: T, help: str = "") -> T:
        if name in self._entries:
            warnings.warn(f"{self.kind} {name!r} registered twice; the later one wins.", stacklevel=2)
        self._entries[name] = entry
        self._help[name] = help
        return entry

    def decorator(self, name: str, help: str = "") -> Callable[[T], T]:
        def wrap(entry: T) -> T:
            return self.register(name, entry, help)

        return wrap

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            near = close_matches(name, self._entries)
            hint = f" Did you mean {', '.join(repr(n) for n in near)}?" if near else ""
            raise ClipauditError(
                f"Unknown {self.kind} {name!r}. Known: {', '.join(sorted(self._entries))}.{hint}"
            ) from None

    def help(self, name: str) -> str:
        return self._help.get(name, "")

    def list(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.list())

    def describe(self) -> str:
        """One line per entry, for ``--help`` texts."""
        return "\n".join(f"  {n:<22} {self._help[n]}" for n in self.list())
