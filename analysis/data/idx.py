"""Fashion-MNIST from its IDX files, and the small bundled evaluation subset."""

from __future__ import annotations

import gzip
import logging
import os
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._atomic import atomic_path
from .._checks import ClipauditError, check_choice
from ..resources import default_cache_dir
from .base import TEST, UNSPECIFIED, ImageDataset
from .files import to_rgb

__all__ = [
    "ArrayImageDataset", "read_idx", "fashion_mnist", "bundled", "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_OFFICIAL_CLASSES", "FASHION_MNIST_SPLITS", "find_fashion_mnist", "DEBIAN_FASHION_MNIST",
]

log = logging.getLogger(__name__)

#: Splits of the Fashion-MNIST release (IDX file pairs).
FASHION_MNIST_SPLITS = ("train", "test")
#: Official label names (https://github.com/zalandoresearch/fashion-mnist#labels).
FASHION_MNIST_OFFICIAL_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)
#: The names used in prompts ("a photo of a {}."): same order, prompt-friendly wording.
FASHION_MNIST_CLASSES = (
    "t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
BUNDLED_FILE = Path(__file__).parent / "bundled" / "fashion-mnist-test-subset.npz"

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) into an array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ClipauditError(f"{str(path)!r} is not an IDX file (bad magic number).")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=_IDX_DTYPES[data[2]], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ClipauditError(f"{str(path)!r}: IDX header says {shape} but the file holds {arr.size} values.")
    return arr.reshape(shape)


class ArrayImageDataset(ImageDataset):
    """Greyscale or RGB images held in a uint8 array (N, H, W[, 3]); ``split`` as :class:`ImageDataset`."""

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray, classnames: list[str],
                 source: str, split: str = UNSPECIFIED) -> None:
        self.name = name
        self.split = split
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.classnames = list(classnames)
        self.source = source

    def load_image(self, index: int) -> Image.Image:
        return to_rgb(Image.fromarray(self.images[index]))

    def describe(self, index: int) -> str:
        return f"{self.source}[{index}]"

    def _fingerprint_items(self) -> list[Any]:
        import hashlib

        return [hashlib.sha256(np.ascontiguousarray(self.images).tobytes()).hexdigest()]


def _locate(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def find_fashion_mnist(root: str | os.PathLike[str] | None, split: str, *, download: bool = True) -> tuple[Path, Path]:
    """Find the IDX files: in ``root``, else Debian's folder, else the download cache (downloading)."""
    check_choice("split", split, FASHION_MNIST_SPLITS)
    img_stem, lab_stem = _FILES[split]
    searched = []
    folders = [Path(root)] if root else []
    folders += [DEBIAN_FASHION_MNIST, default_cache_dir() / "datasets" / "fashion-mnist"]
    for folder in folders:
        searched.append(str(folder))
        img, lab = _locate(folder, img_stem), _locate(folder, lab_stem)
        if img and lab:
            return img, lab
    if download:
        target = folders[-1]
        try:
            for stem in (img_stem, lab_stem):
                with atomic_path(target / f"{stem}.gz") as tmp:
                    log.info("Downloading %s%s.gz", FASHION_MNIST_URL, stem)
                    urllib.request.urlretrieve(f"{FASHION_MNIST_URL}{stem}.gz", tmp)  # noqa: S310
            return target / f"{img_stem}.gz", target / f"{lab_stem}.gz"
        except OSError as err:
            searched.append(f"download from {FASHION_MNIST_URL} failed: {err}")
    raise ClipauditError(
        f"Fashion-MNIST {split} files ({img_stem}[.gz], {lab_stem}[.gz]) not found. Looked in: "
        f"{'; '.join(searched)}. Install Debian's `dataset-fashion-mnist` or pass --root FOLDER."
    )


def fashion_mnist(root: str | os.PathLike[str] | None = None, split: str = "test", *,
                  download: bool = True) -> ArrayImageDataset:
    """Fashion-MNIST (10 classes, 28x28 grey) from its IDX files; ``split`` is "train" (60,000) or "test" (10,000)."""
    img_path, lab_path = find_fashion_mnist(root, split, download=download)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if len(images) != len(labels):
        raise ClipauditError(f"{img_path} has {len(images)} images but {lab_path} has {len(labels)} labels.")
    return ArrayImageDataset("fashion-mnist", images, labels, list(FASHION_MNIST_CLASSES), f"fashion-mnist-{split}",
                             split=split)


def bundled() -> ArrayImageDataset:
    """The stratified Fashion-MNIST test subset shipped with the package (MIT licence); its split is "test"."""
    with np.load(BUNDLED_FILE) as f:
        images, labels, indices = f["images"], f["labels"], f["test_indices"]
    ds = ArrayImageDataset("bundled-fashion-mnist", images, labels, list(FASHION_MNIST_CLASSES),
                           "fashion-mnist-test", split=TEST)
    ds.test_indices = indices
    return ds
