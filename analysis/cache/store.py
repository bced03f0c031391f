"""On-disk row store: one cached array whose rows are computed in any order, in atomically written chunks.

A :class:`RowStore` holds ``n`` rows (one per image of a *root* dataset, or one per text of a list). Any
subset of rows may be computed at any time; each batch of computed rows is written as one chunk file
(atomically: a killed run leaves no half-written chunk), and what exists is rebuilt from the chunk files
themselves, so an interrupted run resumes and two subsets of one dataset share rows. Once every row is
present, the chunks are consolidated into one array.

Layout of one entry ``<root>/<namespace>/<key>/``::

    meta.json                  "format", "key" and the key "parts" (the entry's folder name is the hash of
                               the parts), n, dtype; "complete": true once consolidated, then also "shape" and
                               "sha256" (checksums of data.npy, valid.npy and skipped.json)
    chunks/<first>-<hash>.npz  ``index`` (k,) int64 row numbers, ``rows`` (k, ...) in the stored dtype,
                               ``valid`` (k,) bool, ``skipped`` (JSON list of {"index", "item", "error"}, the
                               index being the row number), ``sha256`` of all four; removed after consolidation
    data.npy                   the consolidated array (n, ...) in the stored dtype
    valid.npy                  (n,) bool: rows that could be computed (unreadable images are False)
    skipped.json               descriptions of the invalid rows and why

and its two lock files ``<root>/.locks/<namespace>/<key>.lock`` and ``<key>.work.lock`` (outside the entry,
so deleting an entry never deletes a lock someone holds).

**Concurrency.** Every read of the entry's files and every write (a chunk, the consolidation, a deletion)
happens under the entry's *state lock* (:mod:`filelock`), held only for that read or write: a reader sees
either the chunks or the complete consolidated entry, never a half-consolidated one, and chunk rows are
read into memory under the lock, so a consolidation that removes the chunks afterwards cannot pull a file
from under a reader. Computing missing rows happens under the entry's *work lock*, held for the whole
computation: a second process that needs the same rows waits for the first and then reads its rows
instead of computing them again. A killed process releases both (they are ``flock`` locks).

**Integrity.** Each chunk and each consolidated entry carries a SHA-256 checksum of its arrays and the
entry records its key parts. A file that cannot be read, a checksum or key that does not match (a truncated
or garbage ``data.npy``, a missing ``valid.npy``, a truncated chunk...) is reported in one log line,
deleted, counted (``on_heal``) and computed again: a corrupt entry is never used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from .._atomic import atomic_path, atomic_write_json, is_temp_name, remove_path
from .keys import CACHE_FORMAT, cache_key

__all__ = ["RowStore", "EntryLocks", "CorruptEntryError", "EntryReport", "read_meta", "plain_parts", "digest",
           "read_chunk", "read_consolidated", "inspect_entry", "load_array", "save_array", "lock_path",
           "remove_entry", "iter_entries", "tree_size", "WAIT_NOTICE"]

log = logging.getLogger(__name__)
_UNREADABLE = (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile, json.JSONDecodeError)
_LOCKS = ".locks"
_KEY = re.compile(r"^[0-9a-f]{32}$")
#: Seconds of waiting for another process's work lock before saying so in the log.
WAIT_NOTICE = 2.0


class CorruptEntryError(Exception):
    """A cache file that cannot be used (unreadable, wrong shape, wrong checksum or key)."""


# ---------------------------------------------------------------------------------------------- helpers
def read_meta(folder: Path) -> dict[str, Any] | None:
    """The entry's ``meta.json``, or None when it is missing or unreadable."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def plain_parts(parts: dict[str, Any]) -> dict[str, Any]:
    """``parts`` as they read back from JSON (what :func:`cache_key` hashes)."""
    return json.loads(json.dumps(parts, sort_keys=True, default=str))


def digest(*items: np.ndarray | str) -> str:
    """SHA-256 (hex) of arrays (dtype, shape and bytes) and texts, in order."""
    h = hashlib.sha256()
    for item in items:
        if isinstance(item, str):
            h.update(b"s")
            h.update(item.encode())
            continue
        a = np.ascontiguousarray(item)
        h.update(f"a{a.dtype.str}{a.shape}".encode())
        if a.size:
            h.update(a.reshape(-1).view(np.uint8))
    return h.hexdigest()


def lock_path(folder: Path, what: str = "") -> Path:
    """Lock file of entry ``folder`` (``<root>/.locks/<namespace>/<key><what>.lock``)."""
    return folder.parent.parent / _LOCKS / folder.parent.name / f"{folder.name}{what}.lock"


def remove_entry(folder: Path) -> None:
    """Delete an entry's files (the caller holds its state lock); its lock files stay."""
    shutil.rmtree(folder, ignore_errors=True)


class EntryLocks:
    """The state lock (short: around reads and writes of the files) and work lock (long: around computing).

    Both are reentrant within one object; ``folder=None`` (an in-memory store) locks nothing, and neither
    does a read-only cache (where lock files cannot be created, and nothing can change either).
    """

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self._state: FileLock | None = None
        self._work: FileLock | None = None
        if folder is not None:
            try:
                lock_path(folder).parent.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                log.debug("No lock folder for cache entry %s (%s): reading it without locks.", folder, err)
                return
            self._state = FileLock(lock_path(folder))
            self._work = FileLock(lock_path(folder, ".work"))

    @staticmethod
    def _take(lock: FileLock | None, timeout: float) -> bool:
        """Acquire ``lock``; False (no locking) if its file cannot be created. Raises ``Timeout``."""
        if lock is None:
            return False
        try:
            lock.acquire(timeout=timeout)
        except (PermissionError, IsADirectoryError) as err:
            log.debug("Cache lock %s cannot be taken (%s): going on without it.", lock.lock_file, err)
            return False
        except OSError as err:
            if err.errno != errno.EROFS:
                raise
            return False
        return True

    @contextmanager
    def state(self, timeout: float = -1) -> Iterator[None]:
        """Hold the state lock (``timeout`` seconds at most, -1: wait as long as it takes)."""
        held = self._take(self._state, timeout)
        try:
            yield
        finally:
            if held:
                assert self._state is not None
                self._state.release()

    @contextmanager
    def work(self) -> Iterator[None]:
        """Hold the work lock, saying in the log when another process holds it for long."""
        try:
            held = self._take(self._work, WAIT_NOTICE)
        except Timeout:
            log.warning("Waiting for another process that is computing cache entry %s.", self.folder)
            held = self._take(self._work, -1)
        try:
            yield
        finally:
            if held:
                assert self._work is not None
                self._work.release()


def _meta_problem(meta: dict[str, Any], folder: Path, parts: dict[str, Any] | None = None) -> str | None:
    """Why ``meta`` does not describe entry ``folder`` (key parts of ``parts`` if given), or None."""
    if meta.get("format") != CACHE_FORMAT:
        return f"cache format {meta.get('format')!r}, expected {CACHE_FORMAT}"
    stored = meta.get("parts")
    if not isinstance(stored, dict):
        return "meta.json has no key parts"
    if meta.get("key") != folder.name:
        return f"meta.json is for key {meta.get('key')!r}, the folder is {folder.name!r}"
    if parts is not None and stored != parts:
        return "meta.json records other key parts than the entry's"
    try:
        if cache_key(stored) != folder.name:
            return "the key parts in meta.json do not hash to the folder name"
    except (TypeError, ValueError) as err:
        return f"the key parts in meta.json cannot be hashed ({err})"
    return None


def read_chunk(path: Path, n: int, dtype: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """``(index, rows, valid, skipped)`` of a chunk file, checked; raises :class:`CorruptEntryError`."""
    try:
        with np.load(path) as z:
            index = np.asarray(z["index"])
            rows = np.asarray(z["rows"])
            valid = np.asarray(z["valid"])
            skipped_text = str(z["skipped"])
            stored = str(z["sha256"]) if "sha256" in z.files else None
        skipped = json.loads(skipped_text)
    except _UNREADABLE as err:
        raise CorruptEntryError(f"unreadable: {type(err).__name__}: {err}") from err
    if stored is None:
        raise CorruptEntryError("it has no checksum")
    if digest(index, rows, valid, skipped_text) != stored:
        raise CorruptEntryError("checksum mismatch")
    if index.dtype != np.int64 or index.ndim != 1 or valid.dtype != bool or valid.shape != index.shape \
            or len(rows) != len(index) or not isinstance(skipped, list):
        raise CorruptEntryError("its arrays do not fit together")
    if len(index) and (index.min() < 0 or index.max() >= n):
        raise CorruptEntryError(f"row numbers {int(index.min())}..{int(index.max())} outside an entry of {n} rows")
    if dtype is not None and str(rows.dtype) != dtype:
        raise CorruptEntryError(f"rows stored as {rows.dtype}, expected {dtype}")
    return index, rows, valid, skipped


def read_consolidated(folder: Path, meta: dict[str, Any], *, mmap: bool = True
                      ) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
    """``(data, valid, skipped)`` of a complete entry, checked against ``meta``; raises :class:`CorruptEntryError`."""
    n, sums = meta.get("n"), meta.get("sha256")
    if not isinstance(sums, dict):
        raise CorruptEntryError("meta.json has no checksums")
    try:
        data = np.load(folder / "data.npy", mmap_mode="r" if mmap else None)
        valid = np.load(folder / "valid.npy")
        skipped_text = (folder / "skipped.json").read_text()
        skipped = json.loads(skipped_text)
    except _UNREADABLE as err:
        raise CorruptEntryError(f"{type(err).__name__}: {err}") from err
    if list(data.shape) != meta.get("shape") or len(data) != n or str(data.dtype) != meta.get("dtype"):
        raise CorruptEntryError(f"data.npy is {data.dtype} {list(data.shape)}, meta.json says "
                           f"{meta.get('dtype')} {meta.get('shape')}")
    if valid.dtype != bool or valid.shape != (n,):
        raise CorruptEntryError(f"valid.npy is {valid.dtype} {list(valid.shape)}, expected bool [{n}]")
    for name, item in (("data.npy", data), ("valid.npy", valid), ("skipped.json", skipped_text)):
        if digest(item) != sums.get(name):
            raise CorruptEntryError(f"{name} checksum mismatch")
    if not isinstance(skipped, list):
        raise CorruptEntryError("skipped.json is not a list")
    return data, valid, skipped


def _write_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, arr)


# ---------------------------------------------------------------------------------------------- row store
@dataclass
class _Block:
    """Rows ``index`` of the store (a chunk or the consolidated array), held in memory (or memory-mapped)."""

    index: np.ndarray
    valid: np.ndarray
    skipped: dict[int, dict[str, str]]
    rows: np.ndarray


class RowStore:
    """``n`` rows of one cache entry, stored in chunks under ``folder`` (``folder=None``: in memory only).

    Parameters
    ----------
    folder : Path or None
        ``<root>/<namespace>/<key>``, ``key`` being :func:`~analysis.cache.keys.cache_key` of ``parts``.
    parts : dict
        Everything the entry is keyed by (recorded in ``meta.json`` and checked on every read).
    n : int
        Number of rows.
    dtype : str
        Storage dtype of the rows.
    on_heal : callable, optional
        Called once per corrupt file found (and deleted).
    """

    def __init__(self, folder: Path | None, parts: dict[str, Any], n: int, dtype: str, *,
                 on_heal: Callable[[], None] | None = None) -> None:
        self.folder = folder
        self.n, self.dtype = int(n), dtype
        self.parts = plain_parts(parts)
        self.meta = {"format": CACHE_FORMAT, "key": folder.name if folder is not None else cache_key(self.parts),
                     "namespace": self.parts.get("namespace"), "n": self.n, "dtype": dtype, "parts": self.parts}
        self.locks = EntryLocks(folder)
        self._on_heal = on_heal
        self._blocks: list[_Block] = []
        self._block_of = np.full(self.n, -1, np.int64)
        self._pos_in = np.full(self.n, -1, np.int64)
        self._seen: set[str] = set()
        self._consolidated = False
        self._tidied = False
        self.refresh()

    # ------------------------------------------------------------------ state
    @property
    def complete(self) -> bool:
        """Every row is present."""
        return bool((self._block_of >= 0).all())

    @property
    def consolidated(self) -> bool:
        return self._consolidated

    def _chunk_dir(self) -> Path:
        assert self.folder is not None
        return self.folder / "chunks"

    def _add(self, block: _Block) -> None:
        new = self._block_of[block.index] < 0
        if not new.any():
            return
        self._blocks.append(block)
        b = len(self._blocks) - 1
        self._block_of[block.index[new]] = b
        self._pos_in[block.index[new]] = np.flatnonzero(new)

    def _reset(self) -> None:
        self._blocks.clear()
        self._block_of[:] = -1
        self._pos_in[:] = -1
        self._seen.clear()
        self._consolidated = False

    def _heal(self, path: Path, reason: str, whole: bool) -> None:
        if whole:
            log.warning("Cache entry %s is corrupt (%s): deleted, it will be computed again.", path, reason)
            remove_entry(path)
        else:
            log.warning("Cache chunk %s is corrupt (%s): deleted, its rows will be computed again.", path, reason)
            path.unlink(missing_ok=True)
        if self._on_heal is not None:
            self._on_heal()

    def _tidy(self) -> None:
        """Remove temporary files of killed writers (any in the entry: every writer holds the state lock)."""
        assert self.folder is not None
        for folder in (self.folder, self._chunk_dir()):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                if is_temp_name(name):
                    remove_path(folder / name)
        self._tidied = True

    def refresh(self) -> None:
        """Read what exists on disk (under the state lock): the consolidated array, else every new chunk."""
        if self.folder is None or self._consolidated:
            return
        with self.locks.state():
            self._scan()

    def _scan(self) -> None:
        assert self.folder is not None
        if not self.folder.is_dir():
            return
        if not self._tidied:
            self._tidy()
        meta = read_meta(self.folder)
        if meta is None:
            if (self.folder / "data.npy").exists() or self._chunk_dir().exists():
                self._heal(self.folder, "meta.json is missing or unreadable", whole=True)
            return
        problem = _meta_problem(meta, self.folder, self.parts)
        if problem is None and (meta.get("n") != self.n or meta.get("dtype") != self.dtype):
            problem = f"meta.json says {meta.get('n')} rows of {meta.get('dtype')}, expected {self.n} of {self.dtype}"
        if problem is not None:
            self._heal(self.folder, problem, whole=True)
            return
        if meta.get("complete"):
            try:
                data, valid, skipped = read_consolidated(self.folder, meta)
            except CorruptEntryError as err:
                self._heal(self.folder, str(err), whole=True)
                return
            self._reset()
            self._add(_Block(np.arange(self.n), valid, {int(s["index"]): s for s in skipped}, data))
            self._consolidated = True
            if self._chunk_dir().exists():  # a consolidation killed before it removed the chunks
                shutil.rmtree(self._chunk_dir(), ignore_errors=True)
            return
        chunk_dir = self._chunk_dir()
        if not chunk_dir.is_dir():
            return
        for path in sorted(chunk_dir.glob("*.npz")):
            if path.name in self._seen:
                continue
            try:
                index, rows, valid, skipped = read_chunk(path, self.n, self.dtype)
                shape = self.row_shape()
                if shape is not None and tuple(rows.shape[1:]) != shape:
                    raise CorruptEntryError(f"rows of shape {tuple(rows.shape[1:])}, the entry's are {shape}")
            except CorruptEntryError as err:
                self._heal(path, str(err), whole=False)
                continue
            self._seen.add(path.name)
            self._add(_Block(index, valid, {int(s["index"]): s for s in skipped}, rows))

    def clear(self) -> None:
        """Forget every row (and delete the entry's files)."""
        self._reset()
        if self.folder is not None:
            with self.locks.state():
                remove_entry(self.folder)

    def missing(self, rows: np.ndarray) -> np.ndarray:
        """Sorted unique row numbers of ``rows`` that are not present."""
        rows = np.unique(np.asarray(rows, np.int64))
        return rows[self._block_of[rows] < 0]

    def row_shape(self) -> tuple[int, ...] | None:
        """Shape of one row, once any row exists."""
        for block in self._blocks:
            return tuple(block.rows.shape[1:])
        return None

    @contextmanager
    def computing(self) -> Iterator[None]:
        """Hold the entry's work lock while computing its missing rows (another process then waits)."""
        with self.locks.work():
            yield

    # ------------------------------------------------------------------ writing
    def _ensure_meta(self) -> bool:
        """Create the folder and an incomplete ``meta.json`` if needed; False if the entry is complete on disk."""
        assert self.folder is not None
        meta = read_meta(self.folder)
        ours = meta is not None and _meta_problem(meta, self.folder, self.parts) is None
        if ours and meta.get("complete"):
            return False
        if not ours:
            self.folder.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.folder / "meta.json", {**self.meta, "complete": False})
        return True

    def write(self, index: np.ndarray, rows: np.ndarray, valid: np.ndarray, skipped: list[dict[str, str]]) -> None:
        """Add rows ``index`` (one chunk, written atomically under the state lock)."""
        index = np.asarray(index, np.int64)
        rows = np.ascontiguousarray(np.asarray(rows).astype(self.dtype, copy=False))
        valid = np.asarray(valid, bool)
        if not (len(index) == len(rows) == len(valid)):
            raise ValueError(f"chunk of {len(index)} rows has {len(rows)} arrays and {len(valid)} flags")
        if not len(index):
            return
        skipped_text = json.dumps(skipped)
        if self.folder is not None:
            name = f"{int(index.min()):09d}-{digest(index)[:16]}.npz"
            with self.locks.state():
                if self._ensure_meta():
                    with atomic_path(self._chunk_dir() / name, suffix=".npz") as tmp:
                        with open(tmp, "wb") as fh:
                            np.savez(fh, index=index, rows=rows, valid=valid, skipped=np.array(skipped_text),
                                     sha256=np.array(digest(index, rows, valid, skipped_text)))
                    self._seen.add(name)
        self._add(_Block(index, valid, {int(s["index"]): s for s in skipped}, rows))

    def consolidate(self) -> bool:
        """Write every row as one array and remove the chunks (only when every row is present).

        Under the state lock: if another process consolidated the entry meanwhile, its arrays are read
        instead. The arrays go first, then ``meta.json`` saying complete (with their checksums), then the
        chunks are removed; a run killed at any point leaves an entry the next run reads or completes.
        """
        if self.folder is None or self._consolidated:
            return self._consolidated
        with self.locks.state():
            self._scan()
            if self._consolidated or not self.complete:
                return self._consolidated
            data, valid, skipped = self._read(np.arange(self.n))
            self.folder.mkdir(parents=True, exist_ok=True)
            skipped_text = json.dumps(skipped, indent=1)
            _write_npy(self.folder / "data.npy", data)
            _write_npy(self.folder / "valid.npy", valid)
            with atomic_path(self.folder / "skipped.json") as tmp:
                tmp.write_text(skipped_text)
            sums = {"data.npy": digest(data), "valid.npy": digest(valid), "skipped.json": digest(skipped_text)}
            atomic_write_json(self.folder / "meta.json", {**self.meta, "complete": True, "shape": list(data.shape),
                                                          "sha256": sums})
            shutil.rmtree(self._chunk_dir(), ignore_errors=True)
        self._reset()
        self._add(_Block(np.arange(self.n), valid, {int(s["index"]): s for s in skipped}, data))
        self._consolidated = True
        return True

    # ------------------------------------------------------------------ reading
    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
        """Rows ``rows`` (every one must be present): data (len(rows), ...), valid, skipped.

        ``skipped`` lists the invalid requested rows in request order, ``"index"`` being the position in
        ``rows``. Rows come from memory (read under the state lock), so no other process can remove them.
        """
        return self._read(rows)

    def _read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
        rows = np.asarray(rows, np.int64)
        blocks = self._block_of[rows]
        if (blocks < 0).any():
            raise KeyError(f"{int((blocks < 0).sum())} requested rows are not in the store")
        shape = self.row_shape() or ()
        data = np.zeros((len(rows), *shape), self.dtype)
        valid = np.zeros(len(rows), bool)
        for b in np.unique(blocks):
            sel = np.flatnonzero(blocks == b)
            block = self._blocks[b]
            pos = self._pos_in[rows[sel]]
            data[sel] = block.rows[pos]
            valid[sel] = block.valid[pos]
        skipped = []
        for k in np.flatnonzero(~valid):
            entry = self._blocks[blocks[k]].skipped.get(int(rows[k]), {"item": str(rows[k]), "error": "unknown"})
            skipped.append({**entry, "index": str(int(k))})
        return data, valid, skipped


# ---------------------------------------------------------------------------------------------- plain arrays
def load_array(folder: Path, parts: dict[str, Any], locks: EntryLocks,
               on_heal: Callable[[], None] | None = None) -> np.ndarray | None:
    """The array of entry ``folder`` (``data.npy``, checked), or None when missing (a corrupt one is deleted)."""
    parts = plain_parts(parts)
    with locks.state():
        meta = read_meta(folder)
        if meta is None and not (folder / "data.npy").exists():
            return None
        problem = "meta.json is missing or unreadable" if meta is None else _meta_problem(meta, folder, parts)
        if problem is None:
            sums = meta.get("sha256") if isinstance(meta.get("sha256"), dict) else {}
            try:
                arr = np.load(folder / "data.npy")
            except _UNREADABLE as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if digest(arr) != sums.get("data.npy"):
                    problem = "data.npy checksum mismatch"
                else:
                    return arr
        log.warning("Cache entry %s is corrupt (%s): deleted, it will be computed again.", folder, problem)
        remove_entry(folder)
        if on_heal is not None:
            on_heal()
        return None


def save_array(folder: Path, parts: dict[str, Any], arr: np.ndarray, locks: EntryLocks) -> None:
    """Write ``arr`` as entry ``folder`` (``data.npy`` then ``meta.json`` with its checksum)."""
    parts = plain_parts(parts)
    with locks.state():
        folder.mkdir(parents=True, exist_ok=True)
        _write_npy(folder / "data.npy", arr)
        atomic_write_json(folder / "meta.json", {
            "format": CACHE_FORMAT, "key": folder.name, "namespace": parts.get("namespace"), "parts": parts,
            "array": True, "complete": True, "shape": list(arr.shape), "dtype": str(arr.dtype),
            "sha256": {"data.npy": digest(arr)}})


# ---------------------------------------------------------------------------------------------- inspection
@dataclass
class EntryReport:
    """What :func:`inspect_entry` found in one entry folder.

    Attributes
    ----------
    folder : Path
    namespace : str
    status : {"complete", "partial", "old-format", "corrupt", "busy"}
        ``old-format``: written by another cache format (never read; ``clipaudit cache clean --old``
        removes it); ``busy``: another process held the entry's lock throughout.
    size : int
        Bytes on disk.
    rows : int
        Rows present (complete entries: ``n``).
    n : int
    problems : list of (Path, str)
        Corrupt files (the entry folder itself when the whole entry is unusable) and why.
    """

    folder: Path
    namespace: str
    status: str
    size: int
    rows: int = 0
    n: int = 0
    problems: list[tuple[Path, str]] = field(default_factory=list)


def tree_size(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def inspect_entry(folder: Path, *, check: bool = True, fix: bool = False, lock_timeout: float = 60.0
                  ) -> EntryReport:
    """Check one entry folder: its key, and (``check``) the checksum of every array it holds.

    With ``fix``, corrupt files are deleted (the whole entry when its consolidated arrays or meta are bad,
    else the bad chunks). Holds the entry's state lock while looking (``busy`` if it cannot be had in
    ``lock_timeout`` seconds).
    """
    report = EntryReport(folder, folder.parent.name, "partial", tree_size(folder))
    locks = EntryLocks(folder)
    try:
        with locks.state(timeout=lock_timeout):
            _inspect(folder, report, check)
            if fix and report.problems:
                for path, _ in report.problems:
                    if path == folder:
                        remove_entry(path)
                    else:
                        path.unlink(missing_ok=True)
    except Timeout:
        report.status = "busy"
    return report


def _inspect(folder: Path, report: EntryReport, check: bool) -> None:
    meta = read_meta(folder)
    if meta is None:
        report.status = "corrupt"
        report.problems.append((folder, "meta.json is missing or unreadable"))
        return
    if meta.get("format") != CACHE_FORMAT:
        report.status = "old-format"
        return
    problem = _meta_problem(meta, folder)
    n = meta.get("n") if isinstance(meta.get("n"), int) else 0
    report.n = n
    if problem is not None:
        report.status = "corrupt"
        report.problems.append((folder, problem))
        return
    if meta.get("complete"):
        report.status, report.rows = "complete", n
        if meta.get("array"):
            report.rows = report.n = int((meta.get("shape") or [1])[0]) if meta.get("shape") else 1
        if not check:
            return
        try:
            if meta.get("array"):
                arr = np.load(folder / "data.npy")
                if digest(arr) != (meta.get("sha256") or {}).get("data.npy"):
                    raise CorruptEntryError("data.npy checksum mismatch")
            else:
                read_consolidated(folder, meta)
        except (CorruptEntryError, *_UNREADABLE) as err:
            report.status = "corrupt"
            report.problems.append((folder, str(err)))
        return
    present = np.zeros(n, bool)
    for path in sorted((folder / "chunks").glob("*.npz")):
        if not check:
            continue
        try:
            index, _, _, _ = read_chunk(path, n, meta.get("dtype"))
        except CorruptEntryError as err:
            report.problems.append((path, str(err)))
            continue
        present[index] = True
    report.rows = int(present.sum())
    if report.problems:
        report.status = "corrupt"


def iter_entries(root: Path) -> Iterator[Path]:
    """Entry folders ``<root>/<namespace>/<key>``, ``key`` being 32 hex digits (nothing else is an entry)."""
    if not root.is_dir():
        return
    for ns in sorted(root.iterdir()):
        if not ns.is_dir() or ns.name.startswith("."):
            continue
        for entry in sorted(ns.iterdir()):
            if entry.is_dir() and _KEY.match(entry.name):
                yield entry

