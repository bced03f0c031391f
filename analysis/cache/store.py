"""On-disk store for arrays computed in chunks: atomic chunk files, resume, then one consolidated file.

Layout of one entry ``<root>/<namespace>/<key>/``::

    meta.json          what the entry is (key parts, dtype, shape); "complete": true once consolidated
    chunks/000007.npz  chunk 7 while the extraction is running (removed after consolidation)
    data.npy           the consolidated array (N, ...) in the stored dtype
    valid.npy          (N,) bool: rows that could be computed (e.g. unreadable images are False)
    skipped.json       descriptions of the invalid rows and why
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._atomic import atomic_path, atomic_write_json

__all__ = ["ChunkedEntry", "read_meta"]


def read_meta(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


class ChunkedEntry:
    """One cached array, filled chunk by chunk."""

    def __init__(self, folder: Path, meta: dict[str, Any], n: int, chunk_size: int, dtype: str) -> None:
        self.folder = folder
        self.meta = {**meta, "n": n, "chunk_size": chunk_size, "dtype": dtype}
        self.n, self.chunk_size, self.dtype = n, chunk_size, dtype

    @property
    def complete(self) -> bool:
        meta = read_meta(self.folder)
        return bool(meta and meta.get("complete")) and (self.folder / "data.npy").is_file()

    def load(self) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
        data = np.load(self.folder / "data.npy", mmap_mode=None)
        valid = np.load(self.folder / "valid.npy")
        skipped = json.loads((self.folder / "skipped.json").read_text())
        return data, valid, skipped

    def _chunk_path(self, i: int) -> Path:
        return self.folder / "chunks" / f"{i:06d}.npz"

    def missing_chunks(self) -> list[int]:
        n_chunks = max(1, -(-self.n // self.chunk_size))
        return [i for i in range(n_chunks) if not self._chunk_path(i).is_file()]

    def fill(self, compute: Callable[[int, int], tuple[np.ndarray, np.ndarray, list[dict[str, str]]]],
             on_chunk: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
        """Compute missing chunks with ``compute(start, stop) -> (rows, valid, skipped)``, then consolidate."""
        if self.complete:
            return self.load()
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.folder / "meta.json", {**self.meta, "complete": False})
        for i in self.missing_chunks():
            start, stop = i * self.chunk_size, min(self.n, (i + 1) * self.chunk_size)
            rows, valid, skipped = compute(start, stop)
            with atomic_path(self._chunk_path(i), suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, rows=rows.astype(self.dtype), valid=valid,
                             skipped=np.array(json.dumps(skipped)))
            if on_chunk is not None:
                on_chunk(stop - start)
        return self._consolidate()

    def _consolidate(self) -> tuple[np.ndarray, np.ndarray, list[dict[str, str]]]:
        rows, valid, skipped = [], [], []
        for i in range(max(1, -(-self.n // self.chunk_size))):
            with np.load(self._chunk_path(i)) as z:
                rows.append(z["rows"])
                valid.append(z["valid"])
                skipped += json.loads(str(z["skipped"]))
        data = np.concatenate(rows) if rows else np.zeros((0,), self.dtype)
        valid_arr = np.concatenate(valid).astype(bool)
        for name, arr in (("data.npy", data), ("valid.npy", valid_arr)):
            with atomic_path(self.folder / name, suffix=".npy") as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, arr)
        atomic_write_json(self.folder / "skipped.json", skipped)
        atomic_write_json(self.folder / "meta.json", {**self.meta, "complete": True,
                                                      "shape": list(data.shape)})
        shutil.rmtree(self.folder / "chunks", ignore_errors=True)
        return data, valid_arr, skipped
