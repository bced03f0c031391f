"""Shared fixtures: tiny open_clip models, generated image datasets, a per-test cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_vit():
    from analysis.models import load_model

    return load_model("clipaudit-tiny-vit")


@pytest.fixture(scope="session")
def tiny_rn():
    from analysis.models import load_model

    return load_model("clipaudit-tiny-rn")


@pytest.fixture()
def cache(tmp_path):
    from analysis.cache import EmbeddingCache

    return EmbeddingCache(tmp_path / "cache", progress=False, chunk_size=8, batch_size=4)


def make_image(rng: np.random.Generator, color: tuple[int, int, int], size: int = 24) -> Image.Image:
    arr = np.clip(np.array(color)[None, None, :] + rng.integers(-30, 30, (size, size, 3)), 0, 255)
    return Image.fromarray(arr.astype(np.uint8))


@pytest.fixture()
def image_folder(tmp_path) -> Path:
    """3 classes x 4 PNG images, one subfolder per class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for name, color in (("red_apple", (220, 30, 30)), ("green_leaf", (30, 200, 40)), ("blue_sky", (40, 60, 230))):
        (root / name).mkdir(parents=True)
        for i in range(4):
            make_image(rng, color).save(root / name / f"{i}.png")
    return root
