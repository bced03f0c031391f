"""Datasets: :func:`create_dataset` turns a name or a path into an :class:`ImageDataset`.

Named datasets (:data:`DATASETS`): ``bundled`` (1,000 Fashion-MNIST test images shipped with the
package), ``fashion-mnist`` (IDX files: ``--root``, Debian's folder, or download), ``imagenet``
(wnid folders under ``--root``) and the ImageNet family. Each registry entry (:class:`DatasetEntry`)
declares its splits and its default split. A path is read by its shape: a ``.csv``/``.jsonl`` manifest
(a ``split`` column gives it splits), a folder of split folders (``train/``, ``val/``, ``test/``), a folder
of WordNet-id folders (ImageNet style), or a folder with one subfolder per class.

Every dataset knows its split (:attr:`ImageDataset.split`; "unspecified" for a path without splits) and,
after ``limit``, how it was subsampled (:meth:`ImageDataset.subset_info`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import ClipauditError, check_positive_int
from .._registry import Registry
from . import imagenet_family as _imagenet_family
from .base import SPLITS, TEST, UNSPECIFIED, ImageDataset, Subset, hash_items, indices_sha256
from .files import (
    FileImageDataset,
    image_folder,
    imagenet_folder,
    manifest,
    manifest_splits,
    open_rgb,
    read_classnames,
)
from .idx import FASHION_MNIST_CLASSES, FASHION_MNIST_SPLITS, ArrayImageDataset, bundled, fashion_mnist, read_idx
from .prompts import TemplateSet, list_template_sets, load_templates
from .splits import DEFAULT_ORDER, check_split, folder_splits, no_splits, preferred_split
from .validation import check_classnames, check_dataset

__all__ = [
    "ImageDataset", "Subset", "FileImageDataset", "ArrayImageDataset", "create_dataset", "DATASETS",
    "DatasetEntry", "dataset_splits", "image_folder", "imagenet_folder", "manifest", "fashion_mnist", "bundled",
    "read_idx", "open_rgb", "read_classnames", "FASHION_MNIST_CLASSES", "TemplateSet", "load_templates",
    "list_template_sets", "Perturbation", "get_perturbation", "hash_items", "indices_sha256",
    "stratified_indices", "SPLITS", "TEST", "UNSPECIFIED",
]

#: Imported on first use (they need torch/torchvision): ``from analysis.data import get_perturbation`` works.
_LAZY = {"Perturbation": ".perturb", "get_perturbation": ".perturb"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module

        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Builder = Callable[..., ImageDataset]


@dataclass(frozen=True)
class DatasetEntry:
    """A named dataset: how to build it and which splits it has.

    Attributes
    ----------
    build : callable (root=None, split=..., classnames=None) -> ImageDataset
        Called with a split from ``splits``; the dataset it returns records its own :attr:`~ImageDataset.split`.
    splits : tuple of str
        Accepted ``split`` values.
    default_split : str
        The split used when none is given.
    """

    build: Builder
    splits: tuple[str, ...]
    default_split: str

    def __post_init__(self) -> None:
        if self.default_split not in self.splits:
            raise ValueError(f"default_split {self.default_split!r} is not in splits {self.splits}.")

    def __call__(self, root: str | None = None, split: str | None = None, classnames: object = None) -> ImageDataset:
        return self.build(root=root, split=self.default_split if split is None else split, classnames=classnames)


def _imagenet(root: str | None = None, split: str = "val", classnames: object = None) -> ImageDataset:
    if root is None:
        raise ClipauditError("Dataset 'imagenet' needs --root: a folder of WordNet-id class folders.")
    folder = Path(root) / split
    if not folder.is_dir():
        if split != "val":
            raise ClipauditError(f"Dataset 'imagenet' --split {split!r}: no folder {str(folder)!r} (--root holds "
                                 f"{split}/ and val/ folders of WordNet-id class folders, or is the val folder).")
        folder = Path(root)
    return imagenet_folder(folder, name="imagenet", split=split)


def _help(text: str, splits: Sequence[str], default: str) -> str:
    if len(splits) == 1:
        return f"{text} [split: {default}]"
    return f"{text} [split: {', '.join(splits)}; default {default}]"


DATASETS: Registry[DatasetEntry] = Registry("dataset")


def _register(name: str, build: Builder, splits: Sequence[str], default: str, help: str) -> None:
    DATASETS.register(name, DatasetEntry(build, tuple(splits), default), _help(help, splits, default))


_register("bundled", lambda root=None, split=TEST, classnames=None: bundled(), (TEST,), TEST,
          "1,000 Fashion-MNIST test images shipped with clipaudit (the default)")
_register("fashion-mnist", lambda root=None, split=TEST, classnames=None: fashion_mnist(root, split),
          FASHION_MNIST_SPLITS, TEST,
          "Fashion-MNIST IDX files (--root, /usr/share/datasets/fashion-mnist, or download)")
_register("imagenet", _imagenet, ("train", "val"), "val",
          "ImageNet-style folder keyed by WordNet ids (--root: the val folder, or one holding train/ and val/)")
# imagenet-val, imagenetv2, imagenet-sketch, imagenet-r/-a (+ -200): splits declared on FAMILY
_imagenet_family.register(_register)

_WNID = re.compile(r"^n\d{8}$")
_NO_SPLIT_FOLDERS = "no train/ val/ test/ subfolders"


def _is_manifest(path: Path) -> bool:
    return path.is_file() and path.suffix in (".csv", ".jsonl")


def dataset_splits(spec: str | os.PathLike[str] | None = None) -> tuple[tuple[str, ...], str | None]:
    """The splits a dataset has and its default one, without loading it.

    Returns ``(splits, default)``: a named dataset's declared splits; a split folder's subfolders or a
    manifest's ``split`` values (default: the first of "test", "val", "train" present, else None); ``((), None)``
    for a path without splits.
    """
    spec = "bundled" if spec is None else str(spec)
    if spec in DATASETS:
        entry = DATASETS.get(spec)
        return entry.splits, entry.default_split
    path = Path(spec).expanduser()
    if _is_manifest(path):
        splits = manifest_splits(path)
    elif path.is_dir():
        splits = folder_splits(path)
    else:
        DATASETS.get(spec)  # unknown name: raises with the known names and a close match
        raise AssertionError  # pragma: no cover
    return splits, preferred_split(splits, DEFAULT_ORDER)


def create_dataset(spec: str | os.PathLike[str] | None = None, *, split: str | None = None, root: str | None = None,
                   classnames: Sequence[str] | str | None = None, limit: int | None = None,
                   seed: int = 0, allow_duplicate_classnames: bool = False, min_classes: int = 2) -> ImageDataset:
    """Build a dataset from a registered name or a path.

    Parameters
    ----------
    spec : str or path, default=None
        A name from :data:`DATASETS` or a path (manifest file or folder). None means ``bundled``.
    split : str, optional
        Which split to load; None: the dataset's default (:func:`dataset_splits`). A path without splits
        accepts only None (its split is recorded as "unspecified").
    root : str, optional
        Data folder for named datasets.
    classnames : list of str or path, optional
        Class names overriding the dataset's own (a list, a text file, or a JSON list/dict).
    limit : int, optional
        Keep a stratified subset of about ``limit`` images (seeded), for quick runs; recorded in
        :meth:`ImageDataset.subset_info`. ``limit >= len(dataset)`` keeps the full dataset.
    seed : int, default=0
        Seed of the ``limit`` sample.
    allow_duplicate_classnames : bool, default=False
        Accept repeated class names (ImageNet-family loaders accept them by themselves: ImageNet-1k's names
        repeat "missile" and "sunglasses").
    min_classes : int, default=2
        Labelled data must hold images of at least this many classes (evaluating on one class is
        meaningless); 1 accepts one-class data.

    Every dataset passes :func:`analysis.data.validation.check_dataset` before it is returned (and a
    manifest's labels :func:`~analysis.data.validation.parse_labels`).

    Raises
    ------
    ClipauditError
        Unknown name, a split the dataset does not have (names its splits and the closest one), a split
        given for data without splits, ``limit`` not a positive integer, a problem with the files (naming
        the file and line), a label that is not a class (with the closest name), duplicate class names,
        or fewer than ``min_classes`` classes.
    """
    check_positive_int("min_classes", min_classes)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1):
        raise ClipauditError(f"--limit must be a positive integer (number of images), got {limit!r}.")
    spec = "bundled" if spec is None else str(spec)
    if spec in DATASETS:
        entry = DATASETS.get(spec)
        ds = entry(root=root, split=check_split(spec, split, entry.splits, entry.default_split),
                   classnames=classnames)
        if classnames is not None:
            names = read_classnames(classnames) if isinstance(classnames, (str, os.PathLike)) else list(classnames)
            if len(names) != len(ds.classnames):
                raise ClipauditError(f"--classnames gives {len(names)} names; {spec} has {len(ds.classnames)}.")
            ds.classnames = check_classnames(names, source="--classnames", allow_duplicates=True)
    else:
        path = Path(spec).expanduser()
        if _is_manifest(path):
            ds = manifest(path, classnames=classnames, split=split)
        elif path.is_dir():
            ds = _folder_dataset(path, split, classnames)
        else:
            DATASETS.get(spec)  # unknown name: raises with the known names and a close match
            raise AssertionError  # pragma: no cover
    given = f"--classnames {str(classnames)!r}" if isinstance(classnames, (str, os.PathLike)) else "classnames"
    check_dataset(ds, min_classes=min_classes, allow_duplicate_classnames=allow_duplicate_classnames,
                  classnames_source=given if classnames is not None else None)
    if limit is not None and limit < len(ds):
        ds = ds.subset(stratified_indices(ds.labels, int(limit), seed=seed), kind="stratified", limit=int(limit),
                       seed=seed)
    return ds


def _folder_dataset(path: Path, split: str | None, classnames: Sequence[str] | str | None) -> ImageDataset:
    """A class folder or a wnid folder; with split subfolders, the one of ``split``."""
    splits = folder_splits(path)
    if not splits:
        chosen = no_splits(str(path), split, _NO_SPLIT_FOLDERS)
        return _class_folders(path, classnames, name=path.name, split=chosen)
    chosen = check_split(str(path), split, splits, preferred_split(splits, DEFAULT_ORDER))
    if classnames is None and (path / "classnames.txt").is_file():
        classnames = str(path / "classnames.txt")
    # the class folders of every split, so that labels mean the same in each split
    union = sorted({d.name for s in splits for d in (path / s).iterdir() if d.is_dir() and not d.name.startswith(".")})
    return _class_folders(path / chosen, classnames, name=path.name, split=chosen, class_folders=union)


def _class_folders(path: Path, classnames: Sequence[str] | str | None, *, name: str, split: str,
                   class_folders: Sequence[str] | None = None) -> ImageDataset:
    subdirs = class_folders if class_folders is not None else [d.name for d in path.iterdir() if d.is_dir()]
    if subdirs and all(_WNID.match(d) for d in subdirs) and classnames is None:
        return imagenet_folder(path, name=name, split=split)
    return image_folder(path, classnames=classnames, name=name, class_folders=class_folders, split=split)


def stratified_indices(labels: np.ndarray, n: int, *, seed: int = 0) -> np.ndarray:
    """About ``n`` indices spread evenly over classes (sorted; unlabeled images count as one class)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    picked = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in classes]
    out = np.sort(np.concatenate(picked))
    if len(out) < n:  # top up when some classes are small
        rest = np.setdiff1d(np.arange(len(labels)), out)
        out = np.sort(np.concatenate([out, rng.permutation(rest)[: n - len(out)]]))
    return out[:n] if len(out) > n else out
