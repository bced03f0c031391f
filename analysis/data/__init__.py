"""Datasets: :func:`create_dataset` turns a name or a path into an :class:`ImageDataset`.

Named datasets (:data:`DATASETS`): ``bundled`` (1,000 Fashion-MNIST test images shipped with the
package), ``fashion-mnist`` (IDX files: ``--root``, Debian's folder, or download), ``imagenet``
(wnid folders under ``--root``). A path is read by its shape: a ``.csv``/``.jsonl`` manifest, a folder
of WordNet-id folders (ImageNet style), or a folder with one subfolder per class.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .._checks import ClipauditError
from .._registry import Registry
from . import imagenet_family as _imagenet_family
from .base import ImageDataset, Subset, hash_items
from .files import FileImageDataset, image_folder, imagenet_folder, manifest, open_rgb, read_classnames
from .idx import FASHION_MNIST_CLASSES, ArrayImageDataset, bundled, fashion_mnist, read_idx
from .perturb import Perturbation, get_perturbation
from .prompts import TemplateSet, list_template_sets, load_templates

__all__ = [
    "ImageDataset", "Subset", "FileImageDataset", "ArrayImageDataset", "create_dataset", "DATASETS",
    "image_folder", "imagenet_folder", "manifest", "fashion_mnist", "bundled", "read_idx", "open_rgb",
    "read_classnames", "FASHION_MNIST_CLASSES", "TemplateSet", "load_templates", "list_template_sets",
    "Perturbation", "get_perturbation", "hash_items", "stratified_indices",
]

Builder = Callable[..., ImageDataset]
DATASETS: Registry[Builder] = Registry("dataset")
DATASETS.register("bundled", lambda root=None, split="test", classnames=None: bundled(),
                  "1,000 Fashion-MNIST test images shipped with clipaudit (the default)")
DATASETS.register("fashion-mnist", lambda root=None, split="test", classnames=None: fashion_mnist(root, split),
                  "Fashion-MNIST IDX files (--root, /usr/share/datasets/fashion-mnist, or download)")


def _imagenet(root: str | None = None, split: str = "val", classnames: object = None) -> ImageDataset:
    if root is None:
        raise ClipauditError("Dataset 'imagenet' needs --root: a folder of WordNet-id class folders.")
    folder = Path(root) / split if (Path(root) / split).is_dir() else Path(root)
    return imagenet_folder(folder, name="imagenet")


DATASETS.register("imagenet", _imagenet, "ImageNet-style validation folder keyed by WordNet ids (--root)")
_imagenet_family.register(DATASETS)  # imagenet-val, imagenetv2, imagenet-sketch, imagenet-r/-a (+ -200)

_WNID = re.compile(r"^n\d{8}$")


def create_dataset(spec: str | os.PathLike[str] | None = None, *, split: str = "test", root: str | None = None,
                   classnames: Sequence[str] | str | None = None, limit: int | None = None,
                   seed: int = 0) -> ImageDataset:
    """Build a dataset from a registered name or a path.

    Parameters
    ----------
    spec : str or path, default=None
        A name from :data:`DATASETS` or a path (manifest file or folder). None means ``bundled``.
    split : str, default="test"
        Split for named datasets that have several.
    root : str, optional
        Data folder for named datasets.
    classnames : list of str or path, optional
        Class names overriding the dataset's own (a list, a text file, or a JSON list/dict).
    limit : int, optional
        Keep a stratified subset of about ``limit`` images (seeded), for quick runs.
    """
    spec = "bundled" if spec is None else str(spec)
    if spec in DATASETS:
        ds = DATASETS.get(spec)(root=root, split=split, classnames=classnames)
        if classnames is not None:
            names = read_classnames(classnames) if isinstance(classnames, (str, os.PathLike)) else list(classnames)
            if len(names) != len(ds.classnames):
                raise ClipauditError(f"--classnames gives {len(names)} names; {spec} has {len(ds.classnames)}.")
            ds.classnames = names
    else:
        path = Path(spec).expanduser()
        if path.is_file() and path.suffix in (".csv", ".jsonl"):
            ds = manifest(path, classnames=classnames)
        elif path.is_dir():
            subdirs = [d.name for d in path.iterdir() if d.is_dir()]
            if subdirs and all(_WNID.match(d) for d in subdirs) and classnames is None:
                ds = imagenet_folder(path)
            else:
                ds = image_folder(path, classnames=classnames)
        else:
            DATASETS.get(spec)  # unknown name: raises with the known names and a close match
            raise AssertionError  # pragma: no cover
    if limit is not None and limit < len(ds):
        ds = ds.subset(stratified_indices(ds.labels, limit, seed=seed))
    return ds


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
