"""The dataset interface every pipeline reads: images (loaded lazily), labels, class names, captions."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["ImageDataset", "Subset", "hash_items"]


def hash_items(*items: Any) -> str:
    """Stable SHA-256 of JSON-serialisable items (used for dataset fingerprints)."""
    h = hashlib.sha256()
    for item in items:
        h.update(json.dumps(item, sort_keys=True, default=str).encode())
    return h.hexdigest()


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
    """

    name: str
    classnames: list[str]
    labels: np.ndarray
    captions: list[list[str]] | None = None

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
        """What identifies the data: file list with sizes/mtimes, or a content hash."""

    def fingerprint(self) -> str:
        """Hash of the data, labels, class names and captions: part of every cache key."""
        return hash_items(
            type(self).__name__, self._fingerprint_items(), self.classnames, self.labels.tolist(), self.captions
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> Subset:
        """A view on some images, e.g. for ``--limit`` or per-class sampling."""
        return Subset(self, np.asarray(indices, dtype=np.int64))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, n={len(self)}, classes={len(self.classnames)})"


class Subset(ImageDataset):
    """Images ``indices`` of a parent dataset (labels and captions follow)."""

    def __init__(self, parent: ImageDataset, indices: np.ndarray) -> None:
        if len(indices) and (indices.min() < 0 or indices.max() >= len(parent)):
            raise IndexError(f"subset indices out of range for {parent!r}")
        self.parent = parent
        self.indices = indices
        self.name = parent.name
        self.classnames = parent.classnames
        self.labels = parent.labels[indices]
        self.captions = None if parent.captions is None else [parent.captions[i] for i in indices]

    def load_image(self, index: int) -> Image.Image:
        return self.parent.load_image(int(self.indices[index]))

    def describe(self, index: int) -> str:
        return self.parent.describe(int(self.indices[index]))

    def _fingerprint_items(self) -> list[Any]:
        return [self.parent.fingerprint(), self.indices.tolist()]

    def subset(self, indices: Sequence[int] | np.ndarray) -> Subset:
        return Subset(self.parent, self.indices[np.asarray(indices, dtype=np.int64)])
