"""Datasets backed by image files: class folders, CSV/JSONL manifests (optionally with a ``split`` column),
ImageNet wnid folders."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._checks import ClipauditError, close_matches
from .._io import read_user_json, read_user_text
from .base import UNSPECIFIED, ImageDataset
from .splits import DEFAULT_ORDER, check_split, no_splits, preferred_split
from .validation import check_classnames, check_inferred_classnames, parse_labels

__all__ = [
    "FileImageDataset", "image_folder", "manifest", "manifest_splits", "imagenet_folder", "read_classnames",
    "read_classnames_file", "open_rgb", "to_rgb", "file_digest", "IMAGE_EXTENSIONS", "SPLIT_COLUMN",
    "FINGERPRINT_BYTES",
]

#: Manifest column (JSONL key) naming each row's split.
SPLIT_COLUMN = "split"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


#: Bytes hashed at each end of a file for its content fingerprint (the whole file when it is at most twice this).
FINGERPRINT_BYTES = 64 * 1024
#: Modes Pillow opens high-bit-depth greyscale images in (16-bit PNG/TIFF: ``I;16*``; 32-bit: ``I``, ``F``).
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _high_depth_to_l(im: Image.Image) -> Image.Image:
    """A high-bit-depth greyscale image as 8-bit ``L``, scaled by its bit depth (not clipped at 255).

    ``I;16*`` (16-bit): value / 257, so 65535 -> 255. ``I`` (32-bit int, which some files holding 16-bit data
    also open as): by the range of its values, the smallest of 8, 16 or 31 bits that holds them (values
    below 0: the min..max range is stretched to 0..255). ``F`` (float): 0..1 -> 0..255, else as ``I``.
    """
    arr = np.asarray(im)
    if arr.size == 0:
        return Image.new("L", im.size)
    if im.mode.startswith("I;16"):
        scaled = arr.astype(np.float64) / 257.0
    else:
        arr = arr.astype(np.float64)
        finite = arr[np.isfinite(arr)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        if lo < 0:
            scaled = (arr - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
        elif im.mode == "F" and hi <= 1.0:
            scaled = arr * 255.0
        else:
            bits = next(b for b in (8, 16, 31, 64) if hi <= 2.0 ** b - 1)
            scaled = arr / ((2.0 ** bits - 1) / 255.0)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def to_rgb(im: Image.Image) -> Image.Image:
    """An image as 8-bit RGB: transparent images composited on white, 16/32-bit greyscale scaled to 8 bits."""
    if im.mode in _HIGH_DEPTH_MODES:
        im = _high_depth_to_l(im)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def open_rgb(path: str | os.PathLike[str]) -> Image.Image:
    """Open an image file as 8-bit RGB (see :func:`to_rgb`: alpha on white, 16-bit greyscale scaled)."""
    with Image.open(path) as im:
        im.load()
        return to_rgb(im)


#: Content digests of files already hashed in this process, keyed by everything ``stat`` says about them
#: (``ctime`` too, which ``os.utime`` cannot set back: a rewritten file is hashed again).
_DIGESTS: dict[tuple[Any, ...], str] = {}


def file_digest(path: str | os.PathLike[str]) -> tuple[int | None, str | None]:
    """``(size, sha256)`` of a file's content: the whole file up to 128 KB, else its first and last 64 KB.

    Fast enough for every run (two reads per file; a file is hashed once per process unless it changes) and,
    unlike size + mtime, it sees content replaced at equal size with the mtime set back. ``(None, None)`` for
    a missing file; ``(size, None)`` for an unreadable one.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    key = (os.fspath(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
    digest = _DIGESTS.get(key)
    if digest is None:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                if st.st_size <= 2 * FINGERPRINT_BYTES:
                    h.update(fh.read())
                else:
                    h.update(fh.read(FINGERPRINT_BYTES))
                    fh.seek(-FINGERPRINT_BYTES, os.SEEK_END)
                    h.update(fh.read(FINGERPRINT_BYTES))
        except OSError:
            return st.st_size, None
        digest = _DIGESTS[key] = h.hexdigest()
    return st.st_size, digest


class FileImageDataset(ImageDataset):
    """Images listed as file paths, with labels and/or captions; ``split`` as :class:`ImageDataset`.

    ``allow_duplicate_classnames`` says that repeated class names are expected (ImageNet-1k's curated names
    repeat "missile" and "sunglasses"); :func:`analysis.data.validation.check_dataset` refuses them otherwise.
    """

    def __init__(self, name: str, paths: Sequence[Path], labels: Sequence[int], classnames: Sequence[str],
                 captions: list[list[str]] | None = None, split: str = UNSPECIFIED, *,
                 allow_duplicate_classnames: bool = False) -> None:
        self.name = name
        self.split = split
        self.paths = [Path(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classnames = list(classnames)
        self.captions = captions
        self.allow_duplicate_classnames = allow_duplicate_classnames

    def load_image(self, index: int) -> Image.Image:
        return open_rgb(self.paths[index])

    def describe(self, index: int) -> str:
        return str(self.paths[index])

    def _fingerprint_items(self) -> list[Any]:
        """Path, size and content digest (:func:`file_digest`) of every file."""
        return [[str(p), *file_digest(p)] for p in self.paths]


def read_classnames_file(path: str | os.PathLike[str]) -> list[str] | dict[str, str]:
    """Class names from a text file (one per line) or JSON: a list, or a ``{folder: name}`` dict.

    Raises
    ------
    ClipauditError
        Missing or unreadable file, not UTF-8, invalid JSON, JSON of another shape, or no names at all.
    """
    path = Path(path)
    what = "Class-names file (--classnames)"
    if not path.is_file():
        raise ClipauditError(f"{what} {str(path)!r} does not exist.")
    text = read_user_text(path, what)
    if path.suffix == ".json":
        data = read_user_json(path, what, text)
        if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
            out: list[str] | dict[str, str] = {str(k): v for k, v in data.items()}
        elif isinstance(data, list) and all(isinstance(x, (str, int, float)) for x in data):
            out = [str(x) for x in data]
        else:
            raise ClipauditError(f"{what} {str(path)!r}: expected a JSON list of class names or a "
                                 f"{{folder: name}} object of strings, got {type(data).__name__}.")
    else:
        out = [line.strip() for line in text.splitlines() if line.strip()]
    if not out:
        raise ClipauditError(f"{what} {str(path)!r} holds no class names.")
    return out


def read_classnames(path: str | os.PathLike[str]) -> list[str]:
    """Class names from a text file (one per line) or JSON (a list, or {folder: name}: its names in order)."""
    names = read_classnames_file(path)
    return list(names.values()) if isinstance(names, dict) else names


ClassnamesSpec = Sequence[str] | Mapping[str, str] | str | os.PathLike[str] | None


def _given_classnames(classnames: ClassnamesSpec) -> tuple[list[str] | dict[str, str] | None, str]:
    """Class names given by the caller (list, file or mapping) and how to name them in messages."""
    if classnames is None:
        return None, ""
    if isinstance(classnames, (str, os.PathLike)):
        names = read_classnames_file(classnames)
        source = f"--classnames {str(classnames)!r}"
    elif isinstance(classnames, Mapping):
        names, source = {str(k): v for k, v in classnames.items()}, "classnames"
    else:
        names, source = list(classnames), "classnames"
    check_classnames(list(names.values()) if isinstance(names, dict) else names, source=source,
                     allow_duplicates=True)  # text and non-blank here; duplicates: check_dataset
    return names, source


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def image_folder(root: str | os.PathLike[str], *, classnames: ClassnamesSpec = None,
                 name: str | None = None, class_folders: Sequence[str] | None = None,
                 split: str = UNSPECIFIED) -> FileImageDataset:
    """One subfolder per class (sorted folder order = label order).

    Class names come from ``classnames`` (a list, a file, or a {folder: name} JSON), else from a
    ``classnames.txt`` in ``root``, else from the folder names (underscores become spaces; a folder name that
    looks like a typo of another is refused, see :func:`~analysis.data.validation.check_inferred_classnames`).
    ``class_folders`` fixes the class folders and their order instead (e.g. the union over the split
    folders of a dataset, so that every split has the same labels; a class may then have no images here).
    """
    root = Path(root)
    if not root.is_dir():
        raise ClipauditError(f"Dataset folder {str(root)!r} does not exist.")
    if class_folders is not None:
        folders = [root / f for f in class_folders]
    else:
        folders = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not folders:
        raise ClipauditError(f"Dataset folder {str(root)!r} has no class subfolders.")
    if classnames is None and (root / "classnames.txt").is_file():
        classnames = str(root / "classnames.txt")
    given, source = _given_classnames(classnames)
    if isinstance(given, dict):
        missing = [d.name for d in folders if d.name not in given]
        if missing:
            near = close_matches(missing[0], list(given))
            hint = f" (for {missing[0]!r}, did you mean {', '.join(map(repr, near))}?)" if near else ""
            raise ClipauditError(f"{source} has no entry for class folder(s) {missing[:5]} of {str(root)!r}{hint}; "
                                 f"it maps folder names to class names.")
        names = [given[d.name] for d in folders]
    elif given is not None:
        names = given
        if len(names) != len(folders):
            raise ClipauditError(
                f"{len(names)} class names given for {len(folders)} class folders in {str(root)!r} ({source})."
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
    if given is None:
        check_inferred_classnames(names, np.bincount(labels, minlength=len(names)),
                                  source=f"Dataset folder {str(root)!r}", what="class folder")
    return FileImageDataset(name or root.name, paths, labels, names, split=split)


def _decode(path: Path, data: bytes) -> str:
    """UTF-8 text of a manifest (a byte-order mark is dropped); not UTF-8 is an error naming the line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise ClipauditError(
            f"Manifest {str(path)!r} is not UTF-8 text: byte 0x{data[err.start]:02x} on line {line} ({err.reason}). "
            f"Save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None


def _read_manifest_rows(path: Path) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows of a CSV/JSONL manifest and the line of each (for messages)."""
    if not path.is_file():
        raise ClipauditError(f"Manifest {str(path)!r} does not exist.")
    try:
        text = _decode(path, path.read_bytes())
    except OSError as err:
        raise ClipauditError(f"Manifest {str(path)!r} cannot be read: {err}.") from None
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    if path.suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ClipauditError(f"{path}:{n}: not valid JSON ({err.msg}).") from None
                if not isinstance(row, dict):
                    raise ClipauditError(f"{path}:{n}: expected a JSON object such as "
                                         f'{{"path": "a.png", "label": "cat"}}, got {type(row).__name__}.')
                rows.append(row)
                lines.append(n)
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            for row in reader:
                rows.append(row)
                lines.append(reader.line_num)
        except csv.Error as err:
            raise ClipauditError(f"{path}:{reader.line_num}: not valid CSV ({err}).") from None
    if not rows:
        raise ClipauditError(f"Manifest {str(path)!r} has no rows.")
    return rows, lines


def _row_splits(path: Path, rows: list[dict[str, Any]]) -> list[str] | None:
    """Each row's split, or None when the manifest has no ``split`` column (every row must then have one)."""
    if not any(SPLIT_COLUMN in r for r in rows):
        return None
    values = [str(r.get(SPLIT_COLUMN) or "").strip() for r in rows]
    missing = [n for n, v in enumerate(values, 1) if not v]
    if missing:
        raise ClipauditError(f"Manifest {str(path)!r} has a {SPLIT_COLUMN!r} column but row(s) {missing[:5]} "
                             f"have no split; give every row one (e.g. 'train' or 'test').")
    return values


def manifest_splits(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """The values of a manifest's ``split`` column, in order of first appearance (() without the column)."""
    path = Path(path)
    values = _row_splits(path, _read_manifest_rows(path)[0])
    return tuple(dict.fromkeys(values)) if values is not None else ()


def _captions(path: Path, line: int, row: dict[str, Any]) -> list[str]:
    caps = row.get("captions")
    if caps is None or caps == "":
        caps = [row["caption"]] if row.get("caption") else []
    elif isinstance(caps, str):
        caps = [caps]
    elif not isinstance(caps, list):
        raise ClipauditError(f"{path}:{line}: 'captions' must be a list of texts, got {type(caps).__name__}.")
    return [str(c) for c in caps]


def manifest(path: str | os.PathLike[str], *, classnames: ClassnamesSpec = None,
             name: str | None = None, split: str | None = None) -> FileImageDataset:
    """A CSV or JSONL manifest with a ``path`` column and ``label`` and/or ``caption`` columns.

    ``label`` is a class name or a class index (an integral number: ``3``, ``3.0``), checked by
    :func:`~analysis.data.validation.parse_labels`: with ``classnames`` every label must be one of them (or
    an index 0..n-1); without, the names found are the classes (indices then need ``classnames``). Every row
    needs a label, except in a manifest with captions (an image without a label then has label -1). Several
    captions per image are given as repeated rows for the same path (CSV) or a ``captions`` list (JSONL).
    Relative paths are relative to the manifest's folder. The file must be UTF-8.

    A ``split`` column makes it a dataset with splits: ``split`` keeps the rows of that split (default: the
    first of "test", "val", "train" the column has); class names given as labels are numbered over all rows,
    so every split has the same labels. Without the column the split is "unspecified" and ``split`` must be
    None.
    """
    path = Path(path)
    rows, lines = _read_manifest_rows(path)
    if "path" not in rows[0]:
        raise ClipauditError(f"Manifest {str(path)!r} needs a 'path' column; found {sorted(map(str, rows[0]))}.")
    has_label = any(r.get("label") not in (None, "") for r in rows)
    has_caption = any(r.get("caption") or r.get("captions") for r in rows)
    if not (has_label or has_caption):
        raise ClipauditError(f"Manifest {str(path)!r} needs a 'label' or 'caption' column.")
    given, source = _given_classnames(classnames)
    given_list = list(given.values()) if isinstance(given, dict) else given
    # labels of every row (class names numbered over all rows, so every split gets the same labels)
    all_labels, names = parse_labels([r.get("label") for r in rows], given_list, source=str(path), lines=lines,
                                     allow_missing=has_caption or not has_label, classnames_source=source)
    row_splits = _row_splits(path, rows)
    keep = range(len(rows))
    if row_splits is None:
        chosen = no_splits(str(path), split, f"no {SPLIT_COLUMN!r} column")
    else:
        accepted = tuple(dict.fromkeys(row_splits))
        chosen = check_split(str(path), split, accepted, preferred_split(accepted, DEFAULT_ORDER))
        keep = [i for i, s in enumerate(row_splits) if s == chosen]
    order: dict[str, int] = {}
    paths: list[Path] = []
    labels: list[int] = []
    first_line: list[int] = []
    captions: list[list[str]] = []
    for i in keep:
        r = rows[i]
        if not isinstance(r.get("path"), str) or not r["path"].strip():
            raise ClipauditError(f"{path}:{lines[i]}: 'path' must name an image file, got {r.get('path')!r}.")
        p = Path(r["path"].strip())
        p = p if p.is_absolute() else path.parent / p
        key = str(p)
        if key not in order:
            order[key] = len(paths)
            paths.append(p)
            labels.append(int(all_labels[i]))
            first_line.append(lines[i])
            captions.append([])
        else:
            j = order[key]
            if all_labels[i] >= 0 and labels[j] >= 0 and all_labels[i] != labels[j]:
                raise ClipauditError(f"{path}:{lines[i]}: image {r['path']!r} is labelled "
                                     f"{names[all_labels[i]]!r} here but {names[labels[j]]!r} on line "
                                     f"{first_line[j]}; give each image one label.")
            labels[j] = max(labels[j], int(all_labels[i]))
        captions[order[key]].extend(_captions(path, lines[i], r))
    return FileImageDataset(name or path.stem, paths, labels, names, captions if has_caption else None,
                            split=chosen)


def imagenet_folder(root: str | os.PathLike[str], *, name: str | None = None,
                    split: str = UNSPECIFIED) -> FileImageDataset:
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
    return FileImageDataset(name or root.name, paths, labels, list(IMAGENET_CLASSNAMES), split=split,
                            allow_duplicate_classnames=True)
