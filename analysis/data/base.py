"""The dataset interface every pipeline reads: images (loaded lazily), labels, class names, captions, split.

A dataset knows which split it is (:attr:`ImageDataset.split`) and, when it is a :class:`Subset`, how it was
cut from the full ("root") dataset (:meth:`ImageDataset.subset_info`); :meth:`ImageDataset.identity` gathers
both with the name and the fingerprint, for provenance records.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["ImageDataset", "Subset", "hash_items", "indices_sha256", "SPLITS", "TEST", "UNSPECIFIED", "SUBSET_KINDS"]

#: Split roles a dataset may have. Training refuses :data:`TEST` data unless told otherwise.
TEST = "test"
#: The split of data that does not say (a plain folder or a manifest without a ``split`` column).
UNSPECIFIED = "unspecified"
SPLITS = ("train", "val", TEST, UNSPECIFIED)
#: How a :class:`Subset` was made: a seeded stratified sample (``--limit``), or indices chosen by the caller.
SUBSET_KINDS = ("stratified", "indices")


def hash_items(*items: Any) -> str:
    """Stable SHA-256 of JSON-serialisable items (used for dataset fingerprints)."""
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps(item, sort_keys=True, default=str).encode())
    return h.hexdigest()


def indices_sha256(indices: Sequence[int] | np.ndarray) -> str:
    """SHA-256 of image indices, taken as little-endian int64 bytes in the given order."""
    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()


class ImageDataset(ABC):
    """A finite, indexable collection of images with optional labels and captions.

    Attributes
    ----------
    name : str
        Short name used in result files (``fashion-mnist``, a folder name...).
    classnames : list of str
        Class names in label order (empty for caption-only data).
    labels : ndarray of shape (n_samples,), int64
        Class index per image, -1 when the image has no label.
    captions : list of list of str, or None
        Captions per image (retrieval datasets), else None.
    split : str
        Which split the images are: ``"train"``, ``"val"``, ``"test"`` (every builder of
        :func:`analysis.data.create_dataset` sets it), or ``"unspecified"`` when the data does not say.
    allow_duplicate_classnames : bool
        True when repeated class names are expected (ImageNet-1k); otherwise
        :func:`analysis.data.validation.check_dataset` refuses them.
    """

    name: str
    classnames: list[str]
    labels: np.ndarray
    captions: list[list[str]] | None = None
    split: str = UNSPECIFIED
    allow_duplicate_classnames: bool = False

    def __len__(self) -> int:
        return int(len(self.labels))

    @abstractmethod
    def load_image(self, index: int) -> Image.Image:
        """Return image ``index`` as an RGB PIL image. Raises ``OSError`` if it cannot be read."""

    @abstractmethod
    def describe(self, index: int) -> str:
        """Where image ``index`` comes from (a file path, or ``name[index]``), for error listings."""

    @abstractmethod
    def _fingerprint_items(self) -> list[Any]:
        """What identifies the data's content: file paths with sizes and content digests, or an array hash."""

    def fingerprint(self) -> str:
        """Hash of the data, labels, class names and captions: part of every cache key."""
        return hash_items(
            type(self).__name__, self._fingerprint_items(), self.classnames, self.labels.tolist(), self.captions
        )

    def subset(self, indices: Sequence[int] | np.ndarray, *, kind: str = "indices", limit: int | None = None,
               seed: int | None = None) -> Subset:
        """A view on some images, e.g. for ``--limit`` or per-class sampling.

        ``kind``, ``limit`` and ``seed`` record how the indices were chosen (see :meth:`subset_info`).
        """
        return Subset(self, np.asarray(indices, dtype=np.int64), kind=kind, limit=limit, seed=seed)

    # provenance ---------------------------------------------------------------------------------------
    @property
    def root(self) -> ImageDataset:
        """The full dataset this one is cut from (itself when it is not a :class:`Subset`)."""
        return self

    def root_indices(self) -> np.ndarray:
        """Index in :attr:`root` of each image (``arange(len(self))`` for a full dataset)."""
        return np.arange(len(self), dtype=np.int64)

    def subset_info(self) -> dict[str, Any] | None:
        """How this dataset was cut from its root: None for a full dataset (see :meth:`Subset.subset_info`)."""
        return None

    def identity(self) -> dict[str, Any]:
        """What identifies these images: ``name``, ``split``, ``subset_info``, ``fingerprint``, ``n_images``."""
        return {"name": self.name, "split": self.split, "subset_info": self.subset_info(),
                "fingerprint": self.fingerprint(), "n_images": len(self)}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, split={self.split!r}, n={len(self)}, "
                f"classes={len(self.classnames)})")


class Subset(ImageDataset):
    """Images ``indices`` of a parent dataset (labels, captions and split follow).

    Parameters
    ----------
    parent : ImageDataset
    indices : ndarray of int
        Positions in ``parent``.
    kind : {"stratified", "indices"}, default="indices"
        How the indices were chosen: a seeded stratified sample of about ``limit`` images
        (:func:`analysis.data.create_dataset` with ``limit``), or by the caller.
    limit, seed : int, optional
        The ``limit`` and ``seed`` of a stratified sample.
    """

    def __init__(self, parent: ImageDataset, indices: np.ndarray, *, kind: str = "indices",
                 limit: int | None = None, seed: int | None = None) -> None:
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(parent)):
            raise IndexError(f"subset indices out of range for {parent!r}")
        if kind not in SUBSET_KINDS:
            raise ValueError(f"Subset kind must be one of {SUBSET_KINDS}, got {kind!r}.")
        self.parent = parent
        self.indices = indices
        self.kind, self.limit, self.seed = kind, limit, seed
        self.name = parent.name
        self.split = parent.split
        self.allow_duplicate_classnames = parent.allow_duplicate_classnames
        self.classnames = parent.classnames
        self.labels = parent.labels[indices]
        self.captions = None if parent.captions is None else [parent.captions[i] for i in indices]

    @property
    def root(self) -> ImageDataset:
        return self.parent.root

    def root_indices(self) -> np.ndarray:
        return self.parent.root_indices()[self.indices]

    def subset_info(self) -> dict[str, Any]:
        """``kind``, ``limit``, ``seed``, ``n`` (images here), ``of`` (images in the root) and
        ``indices_sha256`` (:func:`indices_sha256` of :meth:`root_indices`)."""
        return {"kind": self.kind, "limit": self.limit, "seed": self.seed, "n": len(self), "of": len(self.root),
                "indices_sha256": indices_sha256(self.root_indices())}

    def load_image(self, index: int) -> Image.Image:
        return self.parent.load_image(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.parent.describe(int(self.indices[index]))

    def _fingerprint_items(self) -> list[Any]:
        return [self.parent.fingerprint(), self.indices.tolist()]

    def subset(self, indices: Sequence[int] | np.ndarray, *, kind: str = "indices", limit: int | None = None,
               seed: int | None = None) -> Subset:
        """A subset of this subset, flattened to a :class:`Subset` of :attr:`parent` (its own provenance)."""
        return Subset(self.parent, self.indices[np.asarray(indices, dtype=np.int64)], kind=kind, limit=limit,
                      seed=seed)
