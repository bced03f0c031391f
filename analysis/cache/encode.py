"""The only code that runs encoders: images and texts -> features, through the on-disk row store.

Every kind of feature (:data:`~analysis.cache.kinds.KINDS`) is keyed by what it depends on (model name,
weights source and hash, transform, perturbation, storage dtype) and by the data. Image rows are stored
per image of the *root* dataset (the full dataset a :class:`~analysis.data.Subset` is cut from), so a
subset reads its parent's rows and encodes only the missing ones. One pass over the missing images decodes
each image once and preprocesses it once per kind of input, and encodes every requested view from that.
A second request with the same key reads the rows and encodes nothing; an interrupted extraction resumes
from the last written chunk.

Every encoded batch is checked: a NaN/Inf row is an error naming the model and the first bad image or
text (a diverged model must never look like a confident one), or, with ``skip_bad=True``, the image is
skipped and listed like an unreadable one.

Several processes may share one cache folder: missing rows are computed under the entry's work lock (a
second process needing them waits and then reads them), and every read and write of an entry's files
happens under its state lock (see :mod:`analysis.cache.store`). Every entry is checked (key parts and
SHA-256) when read; a corrupt one is reported in one log line, counted in :attr:`CacheStats.healed`,
deleted and computed again.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .._atomic import clean_stale_temps
from .._checks import ClipauditError, check_choice
from ..data.base import ImageDataset, hash_items
from ..data.perturb import Perturbation, get_perturbation
from ..data.prompts import TemplateSet, load_templates
from ..models.base import ClipModel
from ..resources import default_cache_dir
from .keys import cache_key
from .kinds import KINDS, FeatureKind, encoder_name, transform_key
from .store import EntryLocks, RowStore, load_array, save_array

__all__ = ["EmbeddingCache", "ImageFeatures", "PatchTokens", "CacheStats", "Request", "root_of"]

log = logging.getLogger(__name__)


@dataclass
class ImageFeatures:
    """Image embeddings (L2-normalised for CLIP views) with the rows that could not be computed."""

    features: np.ndarray  # (N, D) float32
    valid: np.ndarray  # (N,) bool
    skipped: list[dict[str, str]]  # [{"index", "item", "error"}] for unreadable (or non-finite) images

    def __len__(self) -> int:
        return len(self.features)


@dataclass
class PatchTokens:
    """Images squashed to the model's input size and their patch tokens (one decode per image)."""

    pixels: np.ndarray  # (N, H, W, 3) uint8 (zeros for invalid rows)
    tokens: np.ndarray  # (N, h*w, d) float32
    valid: np.ndarray  # (N,) bool
    skipped: list[dict[str, str]]


@dataclass
class CacheStats:
    """What a cache did in this process (used by the audit record, tests and benchmarks).

    Attributes
    ----------
    images_encoded : int
        Image rows through the model's image encoder for image views, counted per view (N images in
        two views = 2N).
    images_decoded : int
        Calls of ``dataset.load_image`` made by the cache.
    texts_encoded : int
        Texts through the model's text encoder.
    hits, misses : int
        Requests (one per entry) served without / with encoding.
    keys : list of str
        Entry keys requested.
    encoded : dict of str to int
        Rows computed per feature kind (``image``, ``patch-tokens``, ``visual-prompt``, ``lit-image``...).
    healed : int
        Corrupt cache files found (unreadable, truncated, a checksum or key that does not match), each
        reported in the log, deleted and computed again.
    """

    images_encoded: int = 0
    images_decoded: int = 0
    texts_encoded: int = 0
    hits: int = 0
    misses: int = 0
    keys: list[str] = field(default_factory=list)
    encoded: dict[str, int] = field(default_factory=dict)
    healed: int = 0


@dataclass(frozen=True)
class Request:
    """Rows of one feature kind for (some of) the images of a dataset.

    Attributes
    ----------
    kind : str
        A name of :data:`~analysis.cache.kinds.KINDS` whose ``source`` is ``"dataset"``.
    encoder : object
        The model (or LiT towers) the kind encodes with.
    variant : object
        A perturbation, an image size... (see the kind).
    indices : ndarray of int, optional
        Positions in the dataset (default: every image).
    load : bool, default=True
        False: only make sure the rows are cached (:meth:`EmbeddingCache.dataset_rows` returns None for it).
    """

    kind: str
    encoder: Any
    variant: Any = None
    indices: np.ndarray | None = None
    load: bool = True


def root_of(dataset: Any) -> tuple[Any, np.ndarray]:
    """The root dataset of ``dataset`` and the root index of each of its images."""
    root = getattr(dataset, "root", None)
    root_indices = getattr(dataset, "root_indices", None)
    if root is not None and hasattr(root, "fingerprint") and callable(root_indices):
        return root, np.asarray(root_indices(), np.int64)
    idx = np.arange(len(dataset), dtype=np.int64)
    ds = dataset
    while getattr(ds, "parent", None) is not None and getattr(ds, "indices", None) is not None:
        idx = np.asarray(ds.indices, np.int64)[idx]
        ds = ds.parent
    return ds, idx


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; zero rows stay zero, a NaN row stays NaN (never a zero vector)."""
    x = x.astype(np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms == 0, np.float32(1), norms)


def _finite_rows(arr: np.ndarray) -> np.ndarray:
    """(N,) bool: rows without NaN/Inf (always True for integer arrays)."""
    if arr.dtype.kind != "f":
        return np.ones(len(arr), bool)
    return np.isfinite(arr).reshape(len(arr), -1).all(axis=1) if arr.size else np.ones(len(arr), bool)


def _bad_message(kind: FeatureKind, encoder: Any, variant: Any, item: str) -> str:
    view = f" ({variant.name} view)" if isinstance(variant, Perturbation) else ""
    return (f"Model {encoder_name(encoder)!r} gave a non-finite (NaN/Inf) {kind.what} for {item}{view}: its "
            "weights are probably corrupt or diverged, so no metric of it can be trusted.")


@dataclass
class _Job:
    """One request resolved against its store: which root rows it reads and which it still needs."""

    kind: FeatureKind
    encoder: Any
    variant: Any
    store: RowStore
    rows: np.ndarray  # root row of each requested position
    need: np.ndarray  # (n_root,) bool: rows to compute in this pass
    prep_id: Any
    n_missing: int = 0
    shape: tuple[int, ...] | None = None
    n_bad: int = 0  # rows skipped as non-finite in this pass


def _check_root(root: Path) -> None:
    """A cache root must be a folder (or not exist yet): one clear error naming it otherwise."""
    for path in (root, *root.parents):
        if not path.exists():
            continue
        if not path.is_dir():
            where = "is an existing file" if path == root else f"is inside {path}, an existing file"
            raise ClipauditError(f"Cache folder (--cache-dir) {root} {where}, not a folder: give a folder path "
                                 "(it is created if missing).")
        return


class EmbeddingCache:
    """Features on disk under ``root`` (default: $CLIPAUDIT_CACHE or ~/.cache/clipaudit).

    Safe for several processes at once (per-entry file locks, see :mod:`analysis.cache.store`): two runs
    needing the same rows compute them once, and every entry is checked (key and SHA-256) when read; a
    corrupt one is reported, deleted and computed again. Opening the cache removes the temporary files of
    killed runs from its top folders (and, lazily, from each entry it opens).

    Parameters
    ----------
    root : path, optional
    dtype : {"float16", "float32"}, default="float16"
        Storage dtype of image and text embeddings (recorded in each entry; arrays are returned as float32).
        Patch tokens, visual prompts, raw texts and LiT features are always stored as float32.
    chunk_size : int, default=512
        Rows per atomically written chunk: the unit of resume.
    batch_size : int, default=64
        Image encoder batch size.
    progress : bool, default=True
        Show progress bars.
    enabled : bool, default=True
        False computes everything in memory (``--no-cache``).
    skip_bad : bool, default=False
        An image whose embedding is NaN/Inf is skipped (``valid`` False, listed in ``skipped``) instead of
        raising :class:`ClipauditError`. Texts with a non-finite embedding always raise.

    Raises
    ------
    ClipauditError
        ``root`` is an existing file (or inside one).
    """

    text_batch_size = 256

    def __init__(self, root: str | os.PathLike[str] | None = None, *, dtype: str = "float16",
                 chunk_size: int = 512, batch_size: int = 64, progress: bool = True, enabled: bool = True,
                 skip_bad: bool = False) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.dtype = check_choice("dtype", dtype, ["float16", "float32"])
        self.chunk_size = chunk_size
        self.batch_size = batch_size
        self.progress = progress
        self.enabled = enabled
        self.skip_bad = skip_bad
        self.stats = CacheStats()
        self._memory: dict[str, Any] = {}
        self._stores: dict[str, RowStore] = {}
        if self.enabled:
            _check_root(self.root)
            self._clean_top()

    # ------------------------------------------------------------------ helpers
    def _clean_top(self) -> None:
        """Remove stale temporary files (of killed runs) from the root and its namespace folders."""
        try:
            folders = [self.root, *(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))]
        except OSError:  # no cache yet
            return
        for folder in folders:
            clean_stale_temps(folder)

    def _healed(self) -> None:
        self.stats.healed += 1

    def _store(self, kind: FeatureKind, encoder: Any, variant: Any, data: dict[str, Any], n: int) -> RowStore:
        dtype = kind.dtype or self.dtype
        parts = {"namespace": kind.name, "dtype": dtype, **kind.key(encoder, variant), **data}
        key = cache_key(parts)
        store = self._stores.get(key)
        if store is None or store.n != n:
            folder = self.root / kind.name / key if self.enabled else None
            store = self._stores[key] = RowStore(folder, parts, n, dtype, on_heal=self._healed)
        return store

    @staticmethod
    @contextmanager
    def _computing(stores: Sequence[RowStore]) -> Iterator[None]:
        """Hold the work locks of ``stores`` (in key order, so two processes never wait on each other)."""
        unique = {str(s.folder): s for s in stores if s.folder is not None}
        with ExitStack() as stack:
            for name in sorted(unique):
                stack.enter_context(unique[name].computing())
            yield

    def _count(self, kind: FeatureKind, n: int) -> None:
        self.stats.encoded[kind.name] = self.stats.encoded.get(kind.name, 0) + n
        if kind.counter:
            setattr(self.stats, kind.counter, getattr(self.stats, kind.counter) + n)

    @staticmethod
    def _output(kind: FeatureKind, data: np.ndarray) -> np.ndarray:
        if kind.normalize:
            return _normalise(data)
        return data.astype(np.float32) if data.dtype.kind == "f" else data

    @staticmethod
    def transform_key(model: ClipModel) -> str:
        """Stable text of the model's image transform (memory addresses of functions removed)."""
        return transform_key(model)

    # ------------------------------------------------------------------ dataset rows (one decode pass)
    def dataset_rows(self, dataset: ImageDataset, requests: Sequence[Request], *, batch_size: int | None = None,
                     desc: str = "encode images") -> list[tuple[np.ndarray, np.ndarray, list[dict[str, str]]] | None]:
        """Rows of several feature kinds/views for a dataset, computing every missing row in one pass.

        Each image some request still needs is decoded once; its prepared input (one per ``prepare_id``)
        feeds every request that needs it. Returns ``(rows, valid, skipped)`` per request, rows in the
        stored dtype (float kinds as float32; L2-normalised for kinds that say so); ``skipped[i]["index"]``
        is a position in the request. A request with ``load=False`` gets None.
        """
        root, root_idx = root_of(dataset)
        if len(root_idx) != len(dataset):
            raise ValueError(f"root indices ({len(root_idx)}) do not match the dataset ({len(dataset)} images)")
        n_root = len(root)
        data_key = {"dataset": root.fingerprint()}
        for _attempt in range(2):
            jobs = self._jobs(dataset, requests, root_idx, n_root, data_key)
            pending = [job.store for job in jobs if job.n_missing]
            # rows are computed under the entries' work locks; another process computing them meanwhile
            # is waited for, and the plan is made again from what it wrote
            with self._computing(pending):
                if pending and self.enabled:
                    jobs = self._jobs(dataset, requests, root_idx, n_root, data_key)
                todo = np.flatnonzero(np.logical_or.reduce([j.need for j in jobs])) if jobs else np.zeros(0, int)
                for job in jobs:
                    self.stats.keys.append(job.store.meta["key"])
                    if job.n_missing:
                        self.stats.misses += 1
                    else:
                        self.stats.hits += 1
                if len(todo):
                    local = np.full(n_root, -1, np.int64)
                    local[root_idx[::-1]] = np.arange(len(root_idx))[::-1]  # first position of each root row
                    self._decode_pass(dataset, jobs, todo, local, batch_size or self.batch_size, desc)
                for job in jobs:
                    job.store.consolidate()
            out: list[tuple[np.ndarray, np.ndarray, list[dict[str, str]]] | None] = []
            for job, req in zip(jobs, requests, strict=True):
                if not req.load:
                    out.append(None)
                    continue
                data, valid, skipped = job.store.read(job.rows)
                if job.kind.check_finite and not _finite_rows(data[valid]).all():
                    break
                out.append((self._output(job.kind, data), valid, skipped))
            else:
                return out
            log.warning("Cache entry %s holds non-finite rows: deleted, it will be computed again.",
                        job.store.folder)
            self._healed()
            job.store.clear()
        raise ClipauditError(f"Cache entry {job.store.folder} keeps holding non-finite rows.")

    def _jobs(self, dataset: ImageDataset, requests: Sequence[Request], root_idx: np.ndarray, n_root: int,
              data_key: dict[str, Any]) -> list[_Job]:
        """Resolve each request against its store: the root rows it reads and those still missing."""
        jobs = []
        for req in requests:
            kind = KINDS.get(req.kind)
            positions = np.arange(len(dataset)) if req.indices is None else np.asarray(req.indices, np.int64)
            store = self._store(kind, req.encoder, req.variant, data_key, n_root)
            rows = root_idx[positions]
            missing = store.missing(rows)
            if len(missing) and self.enabled:
                store.refresh()  # another run may have added rows meanwhile
                missing = store.missing(rows)
            need = np.zeros(n_root, bool)
            need[missing] = True
            jobs.append(_Job(kind, req.encoder, req.variant, store, rows, need,
                             kind.prepare_id(req.encoder, req.variant), len(missing)))
        return jobs

    def _decode_pass(self, dataset: ImageDataset, jobs: list[_Job], todo: np.ndarray, local: np.ndarray,
                     batch_size: int, desc: str) -> None:
        preps: dict[Any, Callable[[Any], Any]] = {}
        for job in jobs:
            if job.prep_id not in preps and job.n_missing:
                preps[job.prep_id] = job.kind.prepare(job.encoder, job.variant)
        with tqdm(total=len(todo), desc=desc, disable=not self.progress, leave=False) as bar:
            for c0 in range(0, len(todo), self.chunk_size):
                chunk = todo[c0:c0 + self.chunk_size]
                buffers: dict[int, list[tuple[int, np.ndarray | None, dict[str, str] | None]]] = {
                    id(j): [] for j in jobs}
                for b0 in range(0, len(chunk), batch_size):
                    self._decode_batch(dataset, jobs, chunk[b0:b0 + batch_size], local, preps, buffers)
                    bar.update(len(chunk[b0:b0 + batch_size]))
                for job in jobs:
                    self._write(job, buffers[id(job)])
        for job in jobs:
            if job.n_bad:
                log.warning("Skipped %d images of %s: non-finite %s from model %r.", job.n_bad,
                            getattr(dataset, "name", "the dataset"), job.kind.what, encoder_name(job.encoder))

    def _decode_batch(self, dataset: ImageDataset, jobs: list[_Job], rows: np.ndarray, local: np.ndarray,
                      preps: dict[Any, Callable[[Any], Any]], buffers: dict[int, list]) -> None:
        inputs: dict[Any, dict[int, Any]] = {pid: {} for pid in preps}
        errors: dict[tuple[Any, int], str] = {}
        for r in (int(v) for v in rows):
            pos = int(local[r])
            ids = {j.prep_id for j in jobs if j.need[r]}
            try:
                self.stats.images_decoded += 1
                image = dataset.load_image(pos)
            except Exception as err:  # noqa: BLE001 - any unreadable image is skipped, never a crash
                log.warning("Skipping unreadable image %s (%s)", dataset.describe(pos), err)
                errors.update({(pid, r): f"{type(err).__name__}: {err}" for pid in ids})
                continue
            for pid in ids:
                try:
                    inputs[pid][r] = preps[pid](image)
                except Exception as err:  # noqa: BLE001 - e.g. a transform that rejects the image
                    log.warning("Skipping image %s: it cannot be preprocessed (%s)", dataset.describe(pos), err)
                    errors[pid, r] = f"{type(err).__name__}: {err}"
        for job in jobs:
            mine = [int(r) for r in rows if job.need[r]]
            if not mine:
                continue
            ok = [r for r in mine if r in inputs[job.prep_id]]
            got: dict[int, np.ndarray] = {}
            if ok:
                arr = np.asarray(job.kind.encode(job.encoder, [inputs[job.prep_id][r] for r in ok], job.variant))
                self._count(job.kind, len(ok))
                finite = _finite_rows(arr) if job.kind.check_finite else np.ones(len(ok), bool)
                for r, row, fine in zip(ok, arr, finite, strict=True):
                    if fine:
                        got[r] = row
                        continue
                    item = dataset.describe(int(local[r]))
                    message = _bad_message(job.kind, job.encoder, job.variant, item)
                    if not self.skip_bad:
                        raise ClipauditError(f"{message} Pass skip_bad=True (--skip-bad) to skip and list such "
                                             "images instead.")
                    if not job.n_bad:
                        log.warning("%s Skipping it and every other such image (skip_bad).", message)
                    job.n_bad += 1
                    errors[job.prep_id, r] = f"non-finite {job.kind.what} (NaN/Inf) from model " \
                                             f"{encoder_name(job.encoder)!r}"
            for r in mine:
                if r in got:
                    buffers[id(job)].append((r, got[r], None))
                else:
                    reason = errors.get((job.prep_id, r), "not computed")
                    entry = {"index": str(r), "item": dataset.describe(int(local[r])), "error": reason}
                    buffers[id(job)].append((r, None, entry))

    def _write(self, job: _Job, buffer: list[tuple[int, np.ndarray | None, dict[str, str] | None]]) -> None:
        if not buffer:
            return
        shape = next((row.shape for _, row, _ in buffer if row is not None), None)
        shape = shape or job.shape or job.store.row_shape() or tuple(job.kind.row_shape(job.encoder, job.variant))
        job.shape = tuple(shape)
        dtype = job.kind.dtype or self.dtype
        data = np.stack([row if row is not None else np.zeros(shape, dtype) for _, row, _ in buffer])
        job.store.write(np.array([r for r, _, _ in buffer], np.int64), data,
                        np.array([row is not None for _, row, _ in buffer], bool),
                        [entry for _, _, entry in buffer if entry is not None])

    # ------------------------------------------------------------------ list rows (texts, prompt images)
    def item_rows(self, kind_name: str, encoder: Any, items: Sequence[Any], data_key: dict[str, Any], *,
                  variant: Any = None, describe: Callable[[int], str] | None = None,
                  batch_size: int | None = None, desc: str = "encode") -> np.ndarray:
        """Rows of a list-sourced kind (every item must encode to finite values), chunked and resumable."""
        kind = KINDS.get(kind_name)
        store = self._store(kind, encoder, variant, data_key, len(items))
        self.stats.keys.append(store.meta["key"])
        missing = store.missing(np.arange(len(items)))
        if len(missing) and self.enabled:
            store.refresh()
            missing = store.missing(np.arange(len(items)))
        if not len(missing):
            self.stats.hits += 1
            store.consolidate()
            return self._output(kind, store.read(np.arange(len(items)))[0])
        with self._computing([store]):  # another process computing this list meanwhile is waited for
            store.refresh()
            missing = store.missing(np.arange(len(items)))
            self._encode_items(kind, encoder, items, variant, store, missing, describe, batch_size, desc)
            store.consolidate()
        data, _, _ = store.read(np.arange(len(items)))
        return self._output(kind, data)

    def _encode_items(self, kind: FeatureKind, encoder: Any, items: Sequence[Any], variant: Any, store: RowStore,
                      missing: np.ndarray, describe: Callable[[int], str] | None, batch_size: int | None,
                      desc: str) -> None:
        if not len(missing):  # another process computed them while this one waited
            self.stats.hits += 1
            return
        self.stats.misses += 1
        prep = kind.prepare(encoder, variant)
        size = batch_size or self.batch_size
        with tqdm(total=len(missing), desc=desc, disable=not self.progress, leave=False) as bar:
            for c0 in range(0, len(missing), self.chunk_size):
                chunk = missing[c0:c0 + self.chunk_size]
                parts = []
                for b0 in range(0, len(chunk), size):
                    idx = chunk[b0:b0 + size]
                    arr = np.asarray(kind.encode(encoder, [prep(items[int(i)]) for i in idx], variant))
                    self._count(kind, len(idx))
                    bad = np.flatnonzero(~_finite_rows(arr)) if kind.check_finite else []
                    if len(bad):
                        i = int(idx[bad[0]])
                        item = describe(i) if describe else f"item {i}"
                        raise ClipauditError(_bad_message(kind, encoder, variant, item))
                    parts.append(arr)
                    bar.update(len(idx))
                store.write(chunk, np.concatenate(parts), np.ones(len(chunk), bool), [])

    # ------------------------------------------------------------------ images
    def image_views(self, model: ClipModel, dataset: ImageDataset, views: Sequence[str | Perturbation] = ("none",),
                    *, patch_indices: Sequence[int] | np.ndarray | None = None) -> dict[str, ImageFeatures]:
        """Embeddings of every image of ``dataset`` in each of ``views`` (perturbations), L2-normalised.

        Every image missing from any view is decoded once and preprocessed once; each view is encoded from
        that tensor (perturbations act on the preprocessed batch). A subset reads the rows of its root
        dataset and encodes only the missing ones.

        Parameters
        ----------
        model : ClipModel
        dataset : ImageDataset
        views : sequence of str or Perturbation, default=("none",)
            Perturbation names (``"none"`` is the original image).
        patch_indices : sequence of int, optional
            Positions whose patch tokens and squashed pixels (:meth:`pixels_and_tokens`) are computed in the
            same decode pass, so a later :meth:`pixels_and_tokens` call decodes nothing.

        Returns
        -------
        dict
            Canonical view name -> :class:`ImageFeatures`. Unreadable images (or, with ``skip_bad``,
            images with a non-finite embedding) get a zero row, ``valid=False`` and an entry in ``skipped``.
        """
        perts = list({p.name: p for p in (get_perturbation(v) for v in views)}.values())
        requests = [Request("image", model, p) for p in perts]
        if patch_indices is not None:
            idx = np.asarray(patch_indices, np.int64)
            requests += [Request("pixels", model, None, idx, load=False),
                         Request("patch-tokens", model, None, idx, load=False)]
        names = ", ".join(p.name for p in perts)
        out = self.dataset_rows(dataset, requests, desc=f"encode images ({names})")
        return {p.name: ImageFeatures(*res) for p, res in zip(perts, out[:len(perts)], strict=True)
                if res is not None}

    def image_features(self, model: ClipModel, dataset: ImageDataset, *,
                       perturbation: str | Perturbation = "none") -> ImageFeatures:
        """Embeddings of every image of ``dataset`` (after ``perturbation``): one view of :meth:`image_views`."""
        pert = get_perturbation(perturbation)
        return self.image_views(model, dataset, [pert])[pert.name]

    def pixels_and_tokens(self, model: ClipModel, dataset: ImageDataset,
                          indices: Sequence[int] | np.ndarray | None = None, *,
                          batch_size: int | None = None) -> PatchTokens:
        """Squashed pixels and patch tokens of images ``indices`` (default: all), from one decode per image.

        Each image is resized to the model's input size without cropping (uint8 RGB, what the concept
        pipeline segments and draws on), then preprocessed; patch tokens come from
        :meth:`ClipModel.patch_tokens`. Both are cached per root image, so a second call decodes nothing.
        """
        idx = None if indices is None else np.asarray(indices, np.int64)
        (pixels, valid, skipped), (tokens, _, _) = self.dataset_rows(
            dataset, [Request("pixels", model, None, idx), Request("patch-tokens", model, None, idx)],
            batch_size=batch_size, desc="patch tokens")
        return PatchTokens(pixels, tokens, valid, skipped)

    def visual_prompts(self, model: ClipModel, prompts: np.ndarray, *, batch_size: int | None = None) -> np.ndarray:
        """Embeddings (n, D) of prompted images ``prompts`` (n, V, H, W, 3) uint8.

        Each of the V variants is L2-normalised and the V are averaged (not renormalised), as the reference
        implementation of the concept pipeline does. Keyed by the model and a hash of the pixels.
        """
        prompts = np.ascontiguousarray(prompts, dtype=np.uint8)
        if len(prompts) == 0:
            return np.zeros((0, 0), np.float32)
        digest = hash_items(list(prompts.shape), hashlib.sha256(prompts.tobytes()).hexdigest())
        size = max(1, (batch_size or self.batch_size) // max(1, prompts.shape[1]))
        return self.item_rows("visual-prompt", model, list(prompts), {"prompts": digest}, batch_size=size,
                              describe=lambda i: f"concept prompt image {i}", desc="encode visual prompts")

    # ------------------------------------------------------------------ LiT towers
    def lit_image_features(self, towers: Any, dataset: ImageDataset, *, image_size: int = 224,
                           batch_size: int | None = None) -> ImageFeatures:
        """Locked LiT image-tower features (not normalised, float32) of every image of ``dataset``.

        ``towers``: :class:`analysis.models.lit.LitTowers`. Stored per root image in chunks, so an
        interrupted extraction resumes and subsets share rows.
        """
        ((rows, valid, skipped),) = self.dataset_rows(dataset, [Request("lit-image", towers, int(image_size))],
                                                     batch_size=batch_size, desc="LiT image features")
        return ImageFeatures(rows, valid, skipped)

    def lit_text_features(self, towers: Any, texts: Sequence[str], *, batch_size: int | None = None) -> np.ndarray:
        """Locked LiT text-tower features (n, 384) float32 of ``texts``."""
        texts = [str(t) for t in texts]
        if not texts:
            from ..models.lit import TEXT_FEATURE_DIM

            return np.zeros((0, TEXT_FEATURE_DIM), np.float32)
        return self.item_rows("lit-text", towers, texts, {"texts": hash_items(texts)},
                              batch_size=batch_size or self.text_batch_size,
                              describe=lambda i: f"text {texts[i]!r}", desc="LiT text features")

    # ------------------------------------------------------------------ texts
    def _texts(self, kind: str, model: ClipModel, texts: Sequence[str]) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            raise ClipauditError("No texts to encode: the prompt list is empty.")
        return self.item_rows(kind, model, texts, {"texts": hash_items(texts)}, batch_size=self.text_batch_size,
                              describe=lambda i: f"text {texts[i]!r}", desc="encode texts")

    def text_features(self, model: ClipModel, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts`` (P, D), L2-normalised; one encoder pass per uncached list."""
        return self._texts("text", model, texts)

    def text_features_raw(self, model: ClipModel, texts: Sequence[str]) -> np.ndarray:
        """Unnormalised text embeddings (P, D) (e.g. for norm-based WordNet pruning), float32 storage."""
        return self._texts("text-raw", model, texts)

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
        parts = {"namespace": namespace, "dtype": "keep", **key}
        full_key = cache_key(parts)
        self.stats.keys.append(full_key)
        if full_key in self._memory:
            self.stats.hits += 1
            return self._memory[full_key]
        if not self.enabled:
            self.stats.misses += 1
            arr = self._memory[full_key] = np.asarray(compute())
            return arr
        folder = self.root / namespace / full_key
        locks = EntryLocks(folder)
        arr = load_array(folder, parts, locks, self._healed)
        if arr is None:
            with locks.work():  # another process computing it meanwhile is waited for
                arr = load_array(folder, parts, locks, self._healed)
                if arr is None:
                    self.stats.misses += 1
                    arr = np.asarray(compute())
                    save_array(folder, parts, arr, locks)
                else:
                    self.stats.hits += 1
        else:
            self.stats.hits += 1
        self._memory[full_key] = arr
        return arr
