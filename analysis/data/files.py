"""Datasets backed by image files: class folders, CSV/JSONL manifests, ImageNet wnid folders."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._checks import ClipauditError
from .base import ImageDataset

__all__ = [
    "FileImageDataset", "image_folder", "manifest", "imagenet_folder", "read_classnames", "IMAGE_EXTENSIONS",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


def open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as RGB (transparent images are composited on white)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA")
            background = Image.new("RGBA", im.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, im).convert("RGB")
        return im.convert("RGB")


class FileImageDataset(ImageDataset):
    """Images listed as file paths, with labels and/or captions."""

    def __init__(self, name: str, paths: Sequence[Path], labels: Sequence[int], classnames: Sequence[str],
                 captions: list[list[str]] | None = None) -> None:
        self.name = name
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classnames = list(classnames)
        self.captions = captions

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def _fingerprint_items(self) -> list[Any]:
        items = []
        for p in self.paths:
            try:
                st = p.stat()
                items.append([str(p), st.st_size, st.st_mtime_ns])
            except OSError:
                items.append([str(p), None, None])
        return items


def read_classnames(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file (one per line) or JSON (a list, or {folder: name})."""
    path = Path(path)
    if not path.is_file():
        raise ClipauditError(f"Class-names file {str(path)!r} does not exist.")
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        data = json.loads(text)
        return list(data.values()) if isinstance(data, dict) else [str(x) for x in data]
    return [line.strip() for line in text.splitlines() if line.strip()]


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def image_folder(root: str | os.PathLike[str], *, classnames: Sequence[str] | str | None = None,
                 name: str | None = None) -> FileImageDataset:
    """One subfolder per class (sorted folder order = label order).

    Class names come from ``classnames`` (a list, a file, or a {folder: name} JSON), else from a
    ``classnames.txt`` in ``root``, else from the folder names (underscores become spaces).
    """
    root = Path(root)
    if not root.is_dir():
        raise ClipauditError(f"Dataset folder {str(root)!r} does not exist.")
    folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise ClipauditError(f"Dataset folder {str(root)!r} has no class subfolders.")
    mapping: dict[str, str] | None = None
    if isinstance(classnames, (str, os.PathLike)):
        cpath = Path(classnames)
        if cpath.suffix == ".json" and isinstance(json.loads(cpath.read_text()), dict):
            mapping = json.loads(cpath.read_text())
            classnames = None
        else:
            classnames = read_classnames(cpath)
    elif classnames is None and (root / "classnames.txt").is_file():
        classnames = read_classnames(root / "classnames.txt")
    if mapping is not None:
        missing = [d.name for d in folders if d.name not in mapping]
        if missing:
            raise ClipauditError(f"Class-names mapping has no entry for folder(s) {missing[:5]}.")
        names = [mapping[d.name] for d in folders]
    elif classnames is not None:
        names = list(classnames)
        if len(names) != len(folders):
            raise ClipauditError(
                f"{len(names)} class names given for {len(folders)} class folders in {str(root)!r}."
            )
    else:
        names = [d.name.replace("_", " ") for d in folders]
    paths, labels = [], []
    for label, folder in enumerate(folders):
        files = sorted(p for p in folder.rglob("*") if _is_image(p))
        paths += files
        labels += [label] * len(files)
    if not paths:
        raise ClipauditError(f"No image files ({', '.join(IMAGE_EXTENSIONS)}) found under {str(root)!r}.")
    return FileImageDataset(name or root.name, paths, labels, names)


def manifest(path: str | os.PathLike[str], *, classnames: Sequence[str] | str | None = None,
             name: str | None = None) -> FileImageDataset:
    """A CSV or JSONL manifest with a ``path`` column and ``label`` and/or ``caption`` columns.

    ``label`` may be a class index or a class name; several captions per image are given as repeated
    rows for the same path (CSV) or a ``captions`` list (JSONL). Relative paths are relative to the
    manifest's folder.
    """
    path = Path(path)
    if not path.is_file():
        raise ClipauditError(f"Manifest {str(path)!r} does not exist.")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ClipauditError(f"{path}:{n}: not valid JSON ({err.msg}).") from None
    else:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    if not rows:
        raise ClipauditError(f"Manifest {str(path)!r} has no rows.")
    if "path" not in rows[0]:
        raise ClipauditError(f"Manifest {str(path)!r} needs a 'path' column; found {sorted(rows[0])}.")
    has_label = any(r.get("label") not in (None, "") for r in rows)
    has_caption = any(r.get("caption") or r.get("captions") for r in rows)
    if not (has_label or has_caption):
        raise ClipauditError(f"Manifest {str(path)!r} needs a 'label' or 'caption' column.")
    names = read_classnames(classnames) if isinstance(classnames, (str, os.PathLike)) else classnames
    names = list(names) if names is not None else []
    order: dict[str, int] = {}
    paths: list[Path] = []
    raw_labels: list[Any] = []
    captions: list[list[str]] = []
    for r in rows:
        p = Path(r["path"])
        p = p if p.is_absolute() else path.parent / p
        key = str(p)
        if key not in order:
            order[key] = len(paths)
            paths.append(p)
            raw_labels.append(r.get("label"))
            captions.append([])
        caps = r.get("captions") or ([r["caption"]] if r.get("caption") else [])
        captions[order[key]].extend(str(c) for c in caps)
    labels = []
    for raw in raw_labels:
        if raw in (None, ""):
            labels.append(-1)
        elif isinstance(raw, int) or (isinstance(raw, str) and raw.strip().lstrip("-").isdigit()):
            labels.append(int(raw))
        else:
            if str(raw) not in names:
                names.append(str(raw))
            labels.append(names.index(str(raw)))
    if names and max(labels) >= len(names):
        raise ClipauditError(f"Manifest {str(path)!r}: label {max(labels)} but only {len(names)} class names.")
    if has_label and not names:
        raise ClipauditError(
            f"Manifest {str(path)!r} has integer labels but no class names: pass --classnames FILE."
        )
    return FileImageDataset(name or path.stem, paths, labels, names, captions if has_caption else None)


def imagenet_folder(root: str | os.PathLike[str], *, name: str | None = None) -> FileImageDataset:
    """ImageNet-style folder keyed by WordNet ids (``n01440764/...``): 1000-way labels in standard order.

    Class order comes from timm's ``imagenet_synsets.txt``, names from open_clip's
    ``IMAGENET_CLASSNAMES``. Folders may be any subset of the 1000 wnids (ImageNet-A/R style);
    labels stay 1000-way.
    """
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES
    from timm.data import ImageNetInfo

    root = Path(root)
    if not root.is_dir():
        raise ClipauditError(f"ImageNet folder {str(root)!r} does not exist.")
    wnids = ImageNetInfo("imagenet-1k").label_names()
    index = {w: i for i, w in enumerate(wnids)}
    folders = sorted(d for d in root.iterdir() if d.is_dir())
    unknown = [d.name for d in folders if d.name not in index]
    if unknown:
        raise ClipauditError(
            f"{str(root)!r}: folder(s) {unknown[:5]} are not ImageNet-1k WordNet ids (e.g. 'n01440764')."
        )
    paths, labels = [], []
    for d in folders:
        files = sorted(p for p in d.rglob("*") if _is_image(p))
        paths += files
        labels += [index[d.name]] * len(files)
    if not paths:
        raise ClipauditError(f"No images under {str(root)!r}.")
    return FileImageDataset(name or root.name, paths, labels, list(IMAGENET_CLASSNAMES))
