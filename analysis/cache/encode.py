"""The only code that runs encoders: images and texts -> embeddings, through the on-disk store.

Every embedding is keyed by the model (name, weights source, weights hash), the data (dataset
fingerprint or the exact texts), the image transform and perturbation, and the storage dtype. A second
request with the same key reads the file and encodes nothing; an interrupted extraction resumes from the
last completed chunk.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._checks import ClipauditError, check_choice
from ..data.base import ImageDataset, hash_items
from ..data.perturb import Perturbation, get_perturbation
from ..data.prompts import TemplateSet, load_templates
from ..models.base import ClipModel
from ..resources import default_cache_dir
from .keys import cache_key
from .store import ChunkedEntry

__all__ = ["EmbeddingCache", "ImageFeatures", "CacheStats"]

log = logging.getLogger(__name__)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass
class ImageFeatures:
    """L2-normalised image embeddings with the rows that could not be read."""

    features: np.ndarray  # (N, D) float32
    valid: np.ndarray  # (N,) bool
    skipped: list[dict[str, str]]  # [{"index", "item", "error"}] for unreadable images

    def __len__(self) -> int:
        return len(self.features)


@dataclass
class CacheStats:
    """What a cache did in this process: encoded vs read items (used by tests and benchmarks)."""

    images_encoded: int = 0
    texts_encoded: int = 0
    hits: int = 0
    misses: int = 0
    keys: list[str] = field(default_factory=list)


def _normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


class EmbeddingCache:
    """Embeddings on disk under ``root`` (default: $CLIPAUDIT_CACHE or ~/.cache/clipaudit).

    Parameters
    ----------
    root : path, optional
    dtype : {"float16", "float32"}, default="float16"
        Storage dtype of embeddings (recorded in each entry; arrays are returned as float32).
    chunk_size : int, default=512
        Images (or texts) per atomically written chunk: the unit of resume.
    batch_size : int, default=64
        Encoder batch size.
    progress : bool, default=True
        Show progress bars.
    enabled : bool, default=True
        False computes everything in memory (``--no-cache``).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, dtype: str = "float16",
                 chunk_size: int = 512, batch_size: int = 64, progress: bool = True, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.dtype = check_choice("dtype", dtype, ["float16", "float32"])
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.progress = progress
        self.enabled = enabled
        self.stats = CacheStats()
        self._memory: dict[str, Any] = {}

    # ------------------------------------------------------------------ helpers
    def _entry(self, namespace: str, parts: dict[str, Any], n: int, dtype: str | None = None) -> ChunkedEntry:
        key = cache_key({"namespace": namespace, "dtype": dtype or self.dtype, **parts})
        self.stats.keys.append(key)
        folder = self.root / namespace / key
        return ChunkedEntry(folder, {"namespace": namespace, **parts}, n, self.chunk_size, dtype or self.dtype)

    def _run(self, entry: ChunkedEntry, compute: Callable[[int, int], tuple[np.ndarray, np.ndarray, list]],
             desc: str) -> tuple[np.ndarray, np.ndarray, list]:
        key = entry.folder.name
        if key in self._memory:
            self.stats.hits += 1
            return self._memory[key]
        if self.enabled and entry.complete:
            self.stats.hits += 1
            out = entry.load()
        else:
            self.stats.misses += 1
            if not self.enabled:
                rows, valid, skipped = compute(0, entry.n)
                out = (rows.astype(entry.dtype), valid, skipped)
            else:
                todo = sum(min(entry.n, (i + 1) * entry.chunk_size) - i * entry.chunk_size
                           for i in entry.missing_chunks())
                with tqdm(total=todo, desc=desc, disable=not self.progress or todo == 0, leave=False) as bar:
                    out = entry.fill(compute, on_chunk=bar.update)
        self._memory[key] = out
        return out

    @staticmethod
    def _model_parts(model: ClipModel) -> dict[str, Any]:
        return {"model": model.info.as_dict()}

    @staticmethod
    def transform_key(model: ClipModel) -> str:
        """Stable text of the model's image transform (memory addresses of functions removed)."""
        return _ADDRESS.sub("", repr(model.preprocess))

    # ------------------------------------------------------------------ images
    def image_features(self, model: ClipModel, dataset: ImageDataset, *,
                       perturbation: str | Perturbation = "none") -> ImageFeatures:
        """Embeddings of every image of ``dataset`` (after ``perturbation``), L2-normalised.

        Unreadable images get a zero row, ``valid=False`` and an entry in ``skipped``.
        """
        pert = get_perturbation(perturbation)
        parts = {**self._model_parts(model), "dataset": dataset.fingerprint(),
                 "transform": self.transform_key(model), "perturbation": pert.name}
        entry = self._entry("image", parts, len(dataset))

        def compute(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, list]:
            return self._encode_images(model, dataset, range(start, stop), pert)

        data, valid, skipped = self._run(entry, compute, f"encode images ({pert.name})")
        return ImageFeatures(_normalise(data), valid, skipped)

    def _encode_images(self, model: ClipModel, dataset: ImageDataset, indices: Sequence[int],
                       pert: Perturbation) -> tuple[np.ndarray, np.ndarray, list]:
        rows: list[np.ndarray | None] = []
        skipped: list[dict[str, str]] = []
        batch: list[torch.Tensor] = []
        slots: list[int] = []

        def flush() -> None:
            if not batch:
                return
            with torch.no_grad():
                emb = model.encode_image(pert(torch.stack(batch)), normalize=True).cpu().numpy()
            for slot, e in zip(slots, emb):
                rows[slot] = e
            batch.clear()
            slots.clear()

        for i in indices:
            try:
                tensor = model.preprocess(dataset.load_image(i))
            except Exception as err:  # noqa: BLE001 - any unreadable image is skipped, never a crash
                skipped.append({"index": str(i), "item": dataset.describe(i), "error": f"{type(err).__name__}: {err}"})
                log.warning("Skipping unreadable image %s (%s)", dataset.describe(i), err)
                rows.append(None)
                continue
            rows.append(None)
            batch.append(tensor)
            slots.append(len(rows) - 1)
            self.stats.images_encoded += 1
            if len(batch) == self.batch_size:
                flush()
        flush()
        dim = next((r.shape[0] for r in rows if r is not None), None)
        if dim is None:
            dim = int(model.encode_texts(["a"]).shape[-1])
        valid = np.array([r is not None for r in rows], dtype=bool)
        data = np.stack([r if r is not None else np.zeros(dim, np.float32) for r in rows]) if rows else \
            np.zeros((0, dim), np.float32)
        return data, valid, skipped

    # ------------------------------------------------------------------ texts
    def text_features(self, model: ClipModel, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` (P, D), L2-normalised; one encoder pass per uncached list."""
        texts = [str(t) for t in texts]
        if not texts:
            raise ClipauditError("No texts to encode: the prompt list is empty.")
        parts = {**self._model_parts(model), "texts": hash_items(texts)}
        entry = self._entry("text", parts, len(texts))

        def compute(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, list]:
            out = []
            for b in range(start, stop, 256):
                chunk = texts[b:min(stop, b + 256)]
                with torch.no_grad():
                    out.append(model.encode_text(model.tokenize(chunk), normalize=True).cpu().numpy())
                self.stats.texts_encoded += len(chunk)
            return np.concatenate(out), np.ones(stop - start, bool), []

        data, _, _ = self._run(entry, compute, "encode texts")
        return _normalise(data)

    def text_features_raw(self, model: ClipModel, texts: Sequence[str]) -> np.ndarray:
        """Unnormalised text embeddings (P, D) (e.g. for norm-based WordNet pruning), float32 storage."""
        texts = [str(t) for t in texts]
        if not texts:
            raise ClipauditError("No texts to encode: the prompt list is empty.")
        parts = {**self._model_parts(model), "texts": hash_items(texts), "normalize": False}
        entry = self._entry("text-raw", parts, len(texts), dtype="float32")

        def compute(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, list]:
            with torch.no_grad():
                emb = model.encode_text(model.tokenize(texts[start:stop]), normalize=False).cpu().numpy()
            self.stats.texts_encoded += stop - start
            return emb, np.ones(stop - start, bool), []

        data, _, _ = self._run(entry, compute, "encode texts")
        return data.astype(np.float32)

    def class_embeddings(self, model: ClipModel, classnames: Sequence[str],
                         templates: str | TemplateSet) -> np.ndarray:
        """Per-template class embeddings (T, C, D), each L2-normalised.

        For per-class (CuPL) prompt sets, T=1 and each class's prompts are averaged (then renormalised).
        """
        tset = load_templates(templates)
        if not classnames:
            raise ClipauditError("No class names: the dataset has no classes to build a classifier for.")
        per_class = tset.prompts(classnames)
        flat = [p for prompts in per_class for p in prompts]
        emb = self.text_features(model, flat)
        if tset.per_class is not None:
            out, start = [], 0
            for prompts in per_class:
                out.append(emb[start:start + len(prompts)].mean(0))
                start += len(prompts)
            return _normalise(np.stack(out))[None]
        c, t = len(classnames), len(tset.templates)
        return emb.reshape(c, t, -1).transpose(1, 0, 2).copy()

    # ------------------------------------------------------------------ anything else
    def array(self, namespace: str, key: dict[str, Any], compute: Callable[[], np.ndarray]) -> np.ndarray:
        """Memoise any array under ``namespace`` and ``key`` (stored as float32/int as computed)."""
        probe = self._entry(namespace, key, 1, dtype="keep")
        folder = probe.folder
        if folder.name in self._memory:
            self.stats.hits += 1
            return self._memory[folder.name]
        path = folder / "data.npy"
        if self.enabled and path.is_file():
            self.stats.hits += 1
            arr = np.load(path)
        else:
            self.stats.misses += 1
            arr = np.asarray(compute())
            if self.enabled:
                from .._atomic import atomic_path, atomic_write_json

                folder.mkdir(parents=True, exist_ok=True)
                atomic_write_json(folder / "meta.json", {"namespace": namespace, **key, "shape": list(arr.shape),
                                                         "dtype": str(arr.dtype), "complete": True})
                with atomic_path(path, suffix=".npy") as tmp:
                    with open(tmp, "wb") as fh:
                        np.save(fh, arr)
        self._memory[folder.name] = arr
        return arr
