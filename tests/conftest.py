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


EVIL_CLASS = "<script>alert(1)</script>"


def write_audit_manifest(root: Path) -> Path:
    """3 classes x 4 generated images with captions, one class named like markup, as a JSONL manifest."""
    import json

    rng = np.random.default_rng(1)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, color in (("apple", (220, 30, 30)), ("banana", (230, 220, 40)), (EVIL_CLASS, (40, 60, 230))):
        for i in range(4):
            file = f"{len(lines)}.png"
            make_image(rng, color, size=32).save(root / file)
            lines.append(json.dumps({"path": file, "label": name, "captions": [f"a photo of a {name}", f"{name} {i}"]}))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root / "data.jsonl"


def small_audit_config(tmp: Path, dataset: Path, **overrides):
    """An audit of clipaudit-tiny-rn that runs every stage in seconds (used by test_audit and test_report)."""
    from analysis.audit import AuditConfig, ModelSpec

    cfg = AuditConfig(models=[ModelSpec("clipaudit-tiny-rn")], dataset=str(dataset), templates="simple_imagenet",
                      out=str(tmp / "results"), reports_dir=str(tmp / "reports"),
                      cache_dir=str(tmp / "cache"), batch_size=8, quiet=True, name="tiny")
    cfg.confidence.n_boot = 50
    cfg.hierarchy.examples = 3
    cfg.concepts.classes = ["apple", EVIL_CLASS]
    cfg.concepts.images_per_class = 3
    cfg.concepts.figure_images = 2
    cfg.concepts.descriptors = str(Path(__file__).parent / "data" / "audit_descriptors.txt")
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


@pytest.fixture(scope="session")
def audit_run(tmp_path_factory):
    """One small audit (every stage) shared by the audit and report tests."""
    from analysis.audit import run_audit

    tmp = tmp_path_factory.mktemp("audit")
    dataset = write_audit_manifest(tmp / "data")
    return run_audit(config=small_audit_config(tmp, dataset)), tmp, dataset
