"""Look after a cache folder: what it holds, whether every entry is intact, and removing leftovers.

Used by ``clipaudit cache info|verify|clean``. Every entry is inspected under its state lock, so these
are safe while other runs use the cache (except :func:`clean_cache` with ``everything=True``).
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .._atomic import clean_stale_temps, stale_temps
from .._checks import ClipauditError
from .store import EntryReport, inspect_entry, iter_entries, remove_entry, tree_size

__all__ = ["CacheSummary", "check_cache_root", "summarize_cache", "verify_cache", "clean_cache", "human_size"]


def human_size(n: int) -> str:
    """``n`` bytes as ``"12.3 MB"``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def check_cache_root(root: Path) -> Path:
    """``root`` if it is a folder or does not exist; :class:`ClipauditError` naming it otherwise."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise ClipauditError(f"--cache-dir {root} is an existing file, not a folder: give the cache folder "
                             "(e.g. the --cache-dir given to clipaudit audit).")
    return root


@dataclass
class CacheSummary:
    """What a cache folder holds.

    Attributes
    ----------
    root : Path
    size : int
        Bytes of everything under ``root``.
    entries : list of EntryReport
    temps : list of (Path, int)
        Stale temporary files and folders (of killed runs) with their sizes.
    """

    root: Path
    size: int
    entries: list[EntryReport] = field(default_factory=list)
    temps: list[tuple[Path, int]] = field(default_factory=list)

    def by_namespace(self) -> dict[str, dict[str, int]]:
        """``{namespace: {"entries", "complete", "partial", "old-format", "corrupt", "busy", "size"}}``."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for e in self.entries:
            row = out[e.namespace]
            row["entries"] += 1
            row[e.status] += 1
            row["size"] += e.size
        return {ns: dict(row) for ns, row in sorted(out.items())}


def summarize_cache(root: Path, *, check: bool = False, lock_timeout: float = 5.0) -> CacheSummary:
    """Entries per namespace (``check``: with their checksums verified), sizes and stale temporary files."""
    root = check_cache_root(root)
    summary = CacheSummary(root, tree_size(root) if root.is_dir() else 0)
    summary.entries = [inspect_entry(e, check=check, lock_timeout=lock_timeout) for e in iter_entries(root)]
    summary.temps = stale_temps(root, recursive=True) if root.is_dir() else []
    return summary


def verify_cache(root: Path, *, fix: bool = False, lock_timeout: float = 60.0) -> list[EntryReport]:
    """Check the key and checksums of every entry; with ``fix``, delete the corrupt files. Returns every entry."""
    root = check_cache_root(root)
    return [inspect_entry(e, check=True, fix=fix, lock_timeout=lock_timeout) for e in iter_entries(root)]


def clean_cache(root: Path, *, old: bool = False, everything: bool = False) -> tuple[list[tuple[Path, int]],
                                                                                     list[Path]]:
    """Remove stale temporary files; ``old``: also entries of another cache format; ``everything``: every entry.

    ``everything`` removes each entry folder (``<namespace>/<32 hex digits>``), the lock files and the
    emptied namespace folders, and nothing it does not recognise (a ``--cache-dir`` pointing at the wrong
    folder deletes no foreign file); it must not run while another process uses the cache.

    Returns
    -------
    removed : list of (Path, int)
        What was removed and its size in bytes.
    kept : list of Path
        Top-level items left alone by ``everything`` (not cache entries, e.g. ``nltk_data``).
    """
    root = check_cache_root(root)
    if not root.is_dir():
        return [], []
    removed = clean_stale_temps(root, recursive=True)
    kept: list[Path] = []
    if everything:
        for entry in list(iter_entries(root)):
            removed.append((entry, tree_size(entry)))
            remove_entry(entry)
        locks = root / ".locks"
        if locks.is_dir():
            removed.append((locks, tree_size(locks)))
            shutil.rmtree(locks, ignore_errors=True)
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and not any(child.iterdir()):
                child.rmdir()
            else:
                kept.append(child)
    elif old:
        for entry in list(iter_entries(root)):
            report = inspect_entry(entry, check=False)
            if report.status == "old-format":
                removed.append((entry, report.size))
                remove_entry(entry)
    return removed, kept
