"""The ImageNet family as users keep it on disk: ImageNet val, ImageNetV2, ImageNet-Sketch, -R, -A.

Every loader returns a :class:`~analysis.data.files.FileImageDataset` whose labels index a fixed class
list: the 1000 ImageNet-1k classes in sorted-wnid order (timm's ``imagenet_synsets.txt``, names from
open_clip's ``IMAGENET_CLASSNAMES``), or, for the ``-200`` variants of ImageNet-R and -A, their 200
classes in timm's order (``imagenet_r_synsets.txt`` / ``imagenet_a_synsets.txt``; ``*_indices.txt``
gives their positions among the 1000).

Layouts accepted (``root`` may be the dataset folder itself or a parent holding it under one of the
usual names, see :data:`FOLDER_NAMES`):

- **ImageNet val** (``imagenet-val``):
  (a) 1000 WordNet-id folders (``n01440764/ILSVRC2012_val_00000293.JPEG``), e.g. after the usual
  ``valprep.sh``; or
  (b) the flat folder of 50,000 ``ILSVRC2012_val_XXXXXXXX.JPEG`` files as extracted from the tar, with
  labels from one of (searched next to the images, in their parent, and in ``ILSVRC2012_devkit_t12/data``
  or ``devkit/data`` under either):

  - the devkit's ``ILSVRC2012_validation_ground_truth.txt`` (line *i* = ILSVRC2012_ID of image *i*) plus
    its ``meta.mat``. The ILSVRC2012_ID order is **not** the sorted-wnid order used by every model; the
    IDs are mapped to wnids through ``meta.mat``'s ``synsets`` (read with ``scipy.io.loadmat``) and the
    wnids to the sorted order;
  - a simpler labels file ``val_labels.txt`` (lines ``FILENAME WNID``, or ``FILENAME INDEX`` with the
    sorted-wnid index), or Kaggle's ``LOC_val_solution.csv`` (``ImageId,PredictionString``, the first
    token of which is the wnid).

- **ImageNetV2** (``imagenetv2``): the release tarballs' layout, class-index folders ``0`` ... ``999``
  (the index is the sorted-wnid index). ``split`` picks the variant folder: ``test`` (the default) or
  ``matched-frequency`` (the same), ``threshold0.7`` or ``top-images``. All are test sets: split "test".
- **ImageNet-Sketch** (``imagenet-sketch``): 1000 wnid folders (the release's ``sketch/``).
- **ImageNet-R / -A** (``imagenet-r``, ``imagenet-a``): 200 wnid folders each, labelled **1000-way**
  (as TFDS stores them and as Ge et al. 2023 appear to evaluate); ``imagenet-r-200`` / ``imagenet-a-200``
  label the same images among their 200 classes only (the usual robustness protocol).
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from .._checks import ClipauditError, check_choice
from .base import TEST
from .files import IMAGE_EXTENSIONS, FileImageDataset, _is_image

__all__ = [
    "FAMILY", "FOLDER_NAMES", "imagenet_wnids", "imagenet_classnames", "subset_wnids", "subset_indices",
    "class_wnids", "imagenet_val", "imagenet_v2", "imagenet_sketch", "imagenet_r", "imagenet_a",
    "read_devkit_labels", "read_label_file", "locate", "register",
]

_WNID = re.compile(r"^n\d{8}$")
_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d{8})", re.IGNORECASE)
V2_VARIANTS = {"matched-frequency": "imagenetv2-matched-frequency-format-val",
               "threshold0.7": "imagenetv2-threshold0.7-format-val",
               "top-images": "imagenetv2-top-images-format-val"}

#: Sub-folder names tried under ``root`` (in order, after ``root`` itself).
FOLDER_NAMES: dict[str, tuple[str, ...]] = {
    "imagenet-val": ("val", "imagenet/val", "imagenet-val", "ILSVRC2012_img_val", "imagenet/ILSVRC2012_img_val",
                     "ILSVRC/Data/CLS-LOC/val", "imagenet/ILSVRC/Data/CLS-LOC/val"),
    "imagenetv2": ("imagenetv2", "imagenet-v2", "imagenetv2/{variant}", "imagenet-v2/{variant}", "{variant}"),
    "imagenet-sketch": ("sketch", "imagenet-sketch", "imagenet-sketch/sketch", "imagenet_sketch",
                        "imagenet_sketch/sketch", "ImageNet-Sketch", "ImageNet-Sketch/sketch"),
    "imagenet-r": ("imagenet-r", "imagenet_r", "imagenet-r/imagenet-r"),
    "imagenet-a": ("imagenet-a", "imagenet_a", "imagenet-a/imagenet-a"),
}


# ------------------------------------------------------------------------------------------ class lists
def _timm_info(filename: str) -> list[str]:
    """Lines of a file in timm's ``data/_info`` (read as package data, so it works from a wheel)."""
    text = resources.files("timm.data").joinpath("_info", filename).read_text(encoding="utf-8")
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


@cache
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in the standard (sorted) label order."""
    return tuple(_timm_info("imagenet_synsets.txt"))


@cache
def imagenet_classnames() -> tuple[str, ...]:
    """open_clip's 1000 curated class names (OpenAI's), in the same order."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


@cache
def subset_wnids(which: str) -> tuple[str, ...]:
    """The 200 wnids of ImageNet-R (``"r"``) or -A (``"a"``), timm's order."""
    check_choice("which", which, ("r", "a"))
    return tuple(_timm_info(f"imagenet_{which}_synsets.txt"))


@cache
def subset_indices(which: str) -> tuple[int, ...]:
    """Positions of the 200 ImageNet-R/-A classes among the 1000 (timm's ``imagenet_{r,a}_indices.txt``)."""
    check_choice("which", which, ("r", "a"))
    return tuple(int(x) for x in _timm_info(f"imagenet_{which}_indices.txt"))


# ------------------------------------------------------------------------------------------ locating
def locate(name: str, root: str | os.PathLike[str] | None, candidates: Sequence[str],
           accept: Callable[[Path], bool], expected: str) -> Path:
    """First of ``root``, ``root/candidates[0]``, ... that ``accept`` s; else a ClipauditError listing them."""
    if root is None:
        raise ClipauditError(f"Dataset {name!r} needs a data folder (--root, or --data-root for "
                             f"`clipaudit reproduce`): {expected}.")
    base = Path(root).expanduser()
    tried = [base] + [base / c for c in candidates]
    for path in tried:
        if path.is_dir() and accept(path):
            return path
    looked = ", ".join(str(p) for p in tried)
    raise ClipauditError(f"Dataset {name!r} not found. Expected {expected}. Looked in: {looked}.")


def _subdirs(path: Path) -> list[Path]:
    return sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))


def _has_wnid_folders(path: Path) -> bool:
    dirs = _subdirs(path)
    return bool(dirs) and all(_WNID.match(d.name) for d in dirs)


def _flat_val_images(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if _is_image(p) and _VAL_NUMBER.search(p.name))


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if _is_image(p))


def _wnid_dataset(folder: Path, name: str, wnids: Sequence[str], classnames: Sequence[str],
                  allowed: Sequence[str] | None = None, split: str = TEST) -> FileImageDataset:
    """Images of wnid folders labelled by position in ``wnids``; ``allowed`` limits the folders accepted."""
    index = {w: i for i, w in enumerate(wnids)}
    allowed_set = set(allowed if allowed is not None else wnids)
    folders = _subdirs(folder)
    bad = [d.name for d in folders if d.name not in allowed_set or d.name not in index]
    if bad:
        raise ClipauditError(f"{name}: folder(s) {bad[:5]} under {str(folder)!r} are not {name} classes "
                             f"(expected WordNet ids such as {sorted(allowed_set)[0]!r}).")
    paths: list[Path] = []
    labels: list[int] = []
    for d in folders:
        files = _files(d)
        paths += files
        labels += [index[d.name]] * len(files)
    if not paths:
        raise ClipauditError(f"{name}: no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(folder)!r}.")
    return FileImageDataset(name, paths, labels, list(classnames), split=split, allow_duplicate_classnames=True)


# ------------------------------------------------------------------------------------------ ImageNet val
def read_devkit_labels(ground_truth: str | os.PathLike[str], meta: str | os.PathLike[str]) -> list[str]:
    """Wnid of each validation image (image *i* is line *i*) from the devkit's two files.

    ``ILSVRC2012_validation_ground_truth.txt`` holds ILSVRC2012_IDs (1..1000, the devkit's own order);
    ``meta.mat``'s ``synsets`` table maps each ID to its wnid.
    """
    from scipy.io import loadmat

    try:
        synsets = loadmat(str(meta), squeeze_me=True)["synsets"]
        id_to_wnid = {int(i): str(w) for i, w in zip(synsets["ILSVRC2012_ID"], synsets["WNID"])}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ClipauditError(f"Cannot read the devkit's synsets from {str(meta)!r} ({err}); expected "
                             f"ILSVRC2012_devkit_t12/data/meta.mat.") from None
    out = []
    for n, line in enumerate(Path(ground_truth).read_text().split(), 1):
        try:
            out.append(id_to_wnid[int(line)])
        except (ValueError, KeyError):
            raise ClipauditError(f"{ground_truth}:{n}: {line!r} is not an ILSVRC2012_ID listed in "
                                 f"{meta}.") from None
    return out


def read_label_file(path: str | os.PathLike[str]) -> dict[str, str]:
    """File name -> wnid from ``val_labels.txt`` (``FILE WNID`` or ``FILE INDEX``) or ``LOC_val_solution.csv``."""
    path = Path(path)
    wnids = imagenet_wnids()
    out: dict[str, str] = {}
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                out[row["ImageId"]] = row["PredictionString"].split()[0]
    else:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            parts = line.replace(",", " ").split()
            if len(parts) != 2:
                raise ClipauditError(f"{path}:{n}: expected 'FILENAME WNID' or 'FILENAME INDEX', got {line!r}.")
            file, lab = parts
            if lab.isdigit():
                if int(lab) >= len(wnids):
                    raise ClipauditError(f"{path}:{n}: class index {lab} is not in 0..999.")
                lab = wnids[int(lab)]
            out[file] = lab
    for key in list(out):  # match with or without the extension
        out.setdefault(Path(key).stem, out[key])
    return out


def _devkit_dirs(folder: Path) -> list[Path]:
    dirs = []
    for base in (folder, folder.parent):
        dirs += [base, base / "ILSVRC2012_devkit_t12" / "data", base / "devkit" / "data", base / "devkit"]
    return dirs


def _flat_val_labels(folder: Path, images: list[Path]) -> tuple[list[int], str]:
    index = {w: i for i, w in enumerate(imagenet_wnids())}
    dirs = _devkit_dirs(folder)
    for d in dirs:
        gt, meta = d / "ILSVRC2012_validation_ground_truth.txt", d / "meta.mat"
        if gt.is_file():
            meta_path = next((m for m in (meta, *(x / "meta.mat" for x in dirs)) if m.is_file()), None)
            if meta_path is None:
                raise ClipauditError(f"Found {gt} but no devkit meta.mat (needed to map ILSVRC2012_IDs to "
                                     f"WordNet ids). Looked in: {', '.join(str(x) for x in dirs)}.")
            per_image = read_devkit_labels(gt, meta_path)
            labels = []
            for p in images:
                number = int(_VAL_NUMBER.search(p.name).group(1))  # type: ignore[union-attr]
                if number > len(per_image):
                    raise ClipauditError(f"{p.name}: image number {number} but {gt} has {len(per_image)} lines.")
                labels.append(index[per_image[number - 1]])
            return labels, f"devkit ({gt}, {meta_path})"
        for simple in (d / "val_labels.txt", d / "LOC_val_solution.csv"):
            if simple.is_file():
                table = read_label_file(simple)
                labels = []
                for p in images:
                    wnid = table.get(p.name, table.get(p.stem))
                    if wnid is None or wnid not in index:
                        raise ClipauditError(f"{simple} has no ImageNet-1k label for {p.name} (got {wnid!r}).")
                    labels.append(index[wnid])
                return labels, str(simple)
    looked = ", ".join(str(d) for d in dirs)
    raise ClipauditError(
        f"ImageNet val images in {str(folder)!r} are a flat folder but no labels were found. Put the devkit's "
        f"ILSVRC2012_validation_ground_truth.txt and meta.mat (ILSVRC2012_devkit_t12/data/), or a "
        f"val_labels.txt ('FILENAME WNID' per line), or Kaggle's LOC_val_solution.csv next to them. "
        f"Looked in: {looked}."
    )


def imagenet_val(root: str | os.PathLike[str] | None, split: str = "val") -> FileImageDataset:
    """ImageNet-1k validation images: wnid folders, or the flat folder plus devkit or simple labels (split "val")."""
    folder = locate("imagenet-val", root, FOLDER_NAMES["imagenet-val"],
                    lambda p: _has_wnid_folders(p) or bool(_flat_val_images(p)),
                    "1000 WordNet-id folders (n01440764/...) or the flat folder of ILSVRC2012_val_*.JPEG files "
                    "with the devkit labels")
    if _has_wnid_folders(folder):
        ds = _wnid_dataset(folder, "imagenet-val", imagenet_wnids(), imagenet_classnames(), split="val")
        ds.label_source = "wnid folders"  # type: ignore[attr-defined]
        return ds
    images = _flat_val_images(folder)
    labels, source = _flat_val_labels(folder, images)
    ds = FileImageDataset("imagenet-val", images, labels, list(imagenet_classnames()), split="val",
                          allow_duplicate_classnames=True)
    ds.label_source = source  # type: ignore[attr-defined]
    return ds


# ------------------------------------------------------------------------------------------ the others
def _is_v2(path: Path) -> bool:
    dirs = _subdirs(path)
    return bool(dirs) and all(d.name.isdigit() and int(d.name) < 1000 for d in dirs)


def imagenet_v2(root: str | os.PathLike[str] | None, split: str = "matched-frequency") -> FileImageDataset:
    """ImageNetV2: class-index folders ``0``..``999`` (sorted-wnid indices).

    ``split`` picks the variant (``"test"``: matched-frequency); every variant is a test set, so the
    dataset's split is "test" and the variant is in its name (``imagenetv2-threshold0.7``).
    """
    variant = "matched-frequency" if split in ("test", "val", None) else split
    check_choice("split (ImageNetV2 variant)", variant, list(V2_VARIANTS))
    names = tuple(c.format(variant=V2_VARIANTS[variant]) for c in FOLDER_NAMES["imagenetv2"])
    folder = locate("imagenetv2", root, names, _is_v2,
                    f"class-index folders 0..999 (the {V2_VARIANTS[variant]} release)")
    paths: list[Path] = []
    labels: list[int] = []
    for d in sorted(_subdirs(folder), key=lambda d: int(d.name)):
        files = _files(d)
        paths += files
        labels += [int(d.name)] * len(files)
    if not paths:
        raise ClipauditError(f"imagenetv2: no images under {str(folder)!r}.")
    return FileImageDataset(f"imagenetv2-{variant}", paths, labels, list(imagenet_classnames()), split=TEST,
                            allow_duplicate_classnames=True)


def imagenet_sketch(root: str | os.PathLike[str] | None, split: str = "test") -> FileImageDataset:
    """ImageNet-Sketch: 1000 wnid folders."""
    folder = locate("imagenet-sketch", root, FOLDER_NAMES["imagenet-sketch"], _has_wnid_folders,
                    "WordNet-id folders (n01440764/...), the release's sketch/ folder")
    return _wnid_dataset(folder, "imagenet-sketch", imagenet_wnids(), imagenet_classnames())


def _robust(which: str, root: str | os.PathLike[str] | None, classes: str) -> FileImageDataset:
    check_choice("classes", classes, ("1000", "200"))
    base = f"imagenet-{which}"
    folder = locate(base, root, FOLDER_NAMES[base], _has_wnid_folders,
                    f"the 200 WordNet-id folders of ImageNet-{which.upper()} (n01443537/...)")
    allowed = subset_wnids(which)
    if classes == "1000":
        return _wnid_dataset(folder, base, imagenet_wnids(), imagenet_classnames(), allowed=allowed)
    names = [imagenet_classnames()[i] for i in subset_indices(which)]
    return _wnid_dataset(folder, f"{base}-200", allowed, names)


def imagenet_r(root: str | os.PathLike[str] | None, split: str = "test", classes: str = "1000") -> FileImageDataset:
    """ImageNet-R: 200 wnid folders; 1000-way labels (``classes="1000"``) or 200-way (``"200"``)."""
    return _robust("r", root, classes)


def imagenet_a(root: str | os.PathLike[str] | None, split: str = "test", classes: str = "1000") -> FileImageDataset:
    """ImageNet-A: 200 wnid folders; 1000-way labels (``classes="1000"``) or 200-way (``"200"``)."""
    return _robust("a", root, classes)


# ------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class FamilyMember:
    """One registered dataset: its loader, the wnid of each class, a one-line description, its splits."""

    load: Callable[[str | None, str], FileImageDataset]
    wnids: Callable[[], Sequence[str]]
    help: str
    splits: tuple[str, ...] = (TEST,)
    default_split: str = TEST


FAMILY: dict[str, FamilyMember] = {
    "imagenet-val": FamilyMember(imagenet_val, imagenet_wnids,
                                 "ImageNet-1k val: wnid folders, or flat ILSVRC2012_val_*.JPEG + devkit labels",
                                 splits=("val",), default_split="val"),
    "imagenetv2": FamilyMember(imagenet_v2, imagenet_wnids,
                               "ImageNetV2 class-index folders 0..999 (--split picks the variant; test = "
                               "matched-frequency)", splits=(TEST, *V2_VARIANTS), default_split=TEST),
    "imagenet-sketch": FamilyMember(imagenet_sketch, imagenet_wnids, "ImageNet-Sketch wnid folders (1000-way)"),
    "imagenet-r": FamilyMember(lambda root, split="test": imagenet_r(root, split, "1000"), imagenet_wnids,
                               "ImageNet-R wnid folders, labelled 1000-way (as Ge et al. 2023 appear to)"),
    "imagenet-r-200": FamilyMember(lambda root, split="test": imagenet_r(root, split, "200"),
                                   lambda: subset_wnids("r"), "ImageNet-R on its 200-class subset"),
    "imagenet-a": FamilyMember(lambda root, split="test": imagenet_a(root, split, "1000"), imagenet_wnids,
                               "ImageNet-A wnid folders, labelled 1000-way (as Ge et al. 2023 appear to)"),
    "imagenet-a-200": FamilyMember(lambda root, split="test": imagenet_a(root, split, "200"),
                                   lambda: subset_wnids("a"), "ImageNet-A on its 200-class subset"),
}


def class_wnids(name: str) -> list[str]:
    """WordNet id of each class of family dataset ``name`` (for the WordNet hierarchy)."""
    check_choice("dataset", name, list(FAMILY))
    return list(FAMILY[name].wnids())


def register(add: Callable[[str, Callable[..., FileImageDataset], tuple[str, ...], str, str], None]) -> None:
    """Add the family to :data:`analysis.data.DATASETS`: ``add(name, build, splits, default_split, help)``.

    Builders take ``root``, ``split`` (already checked against the member's splits) and ``classnames``.
    """
    for name, member in FAMILY.items():
        def build(root: str | None = None, split: str = member.default_split, classnames: object = None,
                  _load: Callable[..., FileImageDataset] = member.load) -> FileImageDataset:
            return _load(root, split)

        add(name, build, member.splits, member.default_split, member.help)
