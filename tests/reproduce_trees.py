"""Small generated ImageNet-family trees for the reproduce tests (a few wnid folders of tiny images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: three ImageNet-1k classes, and three that are also ImageNet-R and ImageNet-A classes
VAL_WNIDS = ("n01440764", "n01443537", "n01484850")


def save_images(folder: Path, n: int, seed: int, prefix: str = "img", ext: str = ".JPEG") -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        arr = np.clip(rng.integers(0, 255, 3)[None, None, :] + rng.integers(-40, 40, (20, 20, 3)), 0, 255)
        path = folder / f"{prefix}_{i:04d}{ext}"
        Image.fromarray(arr.astype(np.uint8)).save(path, format="JPEG" if ext.upper() == ".JPEG" else None)
        out.append(path)
    return out


def wnid_tree(root: Path, wnids: tuple[str, ...] | list[str], per_class: int = 3) -> Path:
    for k, w in enumerate(wnids):
        save_images(root / w, per_class, seed=k)
    return root
