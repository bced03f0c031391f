"""The mutual-knowledge pipeline end to end on tiny models, and descriptor pools."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis._checks import ClipauditError
from analysis.concepts.descriptors import list_descriptor_pools, load_descriptors, parse_descriptor_pool


def test_shipped_fashion_mnist_pool():
    assert "fashion-mnist" in list_descriptor_pools()
    pool = load_descriptors("fashion-mnist")
    from analysis.data import FASHION_MNIST_CLASSES

    assert sorted(pool.per_class) == sorted(FASHION_MNIST_CLASSES)  # keyed like the dataset's class names
    assert all(15 <= len(v) <= 25 for v in pool.per_class.values())
    flat = [d for v in pool.per_class.values() for d in v]
    assert list(pool.descriptors) == list(dict.fromkeys(flat))  # deduplicated, file order


def test_pool_formats_and_errors(tmp_path):
    menon = tmp_path / "descriptors_demo.json"
    menon.write_text(json.dumps({"tench": ["a fish", "scales"], "goldfish": ["scales", "orange colour"]}))
    pool = load_descriptors(menon)
    assert pool.descriptors == ("a fish", "scales", "orange colour") and pool.for_class("tench") == ("a fish", "scales")
    with pytest.raises(ClipauditError, match="goldfish"):
        pool.for_class("goldfsh")
    plain = tmp_path / "plain.txt"
    plain.write_text("# comment\nstripes\n\nspots\n")
    assert load_descriptors(plain).descriptors == ("stripes", "spots")
    with pytest.raises(ClipauditError, match="fashion-mnist"):
        load_descriptors("fashion-mnsit")
    with pytest.raises(ClipauditError, match="list of strings"):
        parse_descriptor_pool({"a": "not a list"}, "bad")
    with pytest.raises(ClipauditError, match="empty"):
        parse_descriptor_pool([], "empty")


@pytest.fixture(scope="module")
def tiny_rn():
    from analysis.models import load_model

    return load_model("clipaudit-tiny-rn")


@pytest.fixture(scope="module")
def bundled_two_classes():
    from analysis.data import create_dataset

    ds = create_dataset("bundled")
    keep = np.concatenate([np.flatnonzero(ds.labels == k)[:4] for k in (1, 8)])
    return ds.subset(keep)


def test_segment_class_on_cnn_grid(tiny_rn, bundled_two_classes, tmp_path):
    from analysis.cache import EmbeddingCache
    from analysis.concepts.pipeline import ConceptConfig, grid_shape, segment_class

    cache = EmbeddingCache(tmp_path / "c", progress=False)
    patches = cache.pixels_and_tokens(tiny_rn, bundled_two_classes, range(4))
    arrays, tokens = patches.pixels, patches.tokens
    grid = grid_shape(tokens.shape[1], arrays.shape[1:3])
    assert grid[0] * grid[1] == tokens.shape[1]
    seg = segment_class(tokens, grid, arrays, ConceptConfig(n_parts=2))
    assert seg.pixel_foreground.shape == arrays.shape[:3]
    for m in ("pca", "kmeans"):
        assert (seg.pixel_labels[m][~seg.pixel_foreground] == -1).all()


def test_run_concepts_end_to_end(tiny_rn, bundled_two_classes, tmp_path):
    from analysis.cache import EmbeddingCache
    from analysis.concepts.pipeline import ConceptConfig, run_concepts

    cache = EmbeddingCache(tmp_path / "cache", progress=False)
    pool = load_descriptors("fashion-mnist")
    names = bundled_two_classes.classnames
    classes = [names[1], names[8]]
    result = run_concepts(tiny_rn, bundled_two_classes, cache, pool, classes=classes, images_per_class=4,
                          templates="name_only", config=ConceptConfig(n_parts=3, text_top_k=50))
    per_image, per_class = result.per_image, result.per_class
    assert set(per_image["class"]) == set(classes) and len(per_image) == 2 * 4 * 2
    assert set(per_class["method"]) == {"pca", "kmeans"} and len(per_class) == 4
    for _, row in per_image.iterrows():
        curve = np.asarray(row["curve"])
        assert len(curve) == len(row["vision_descriptors"]) + 1 and curve[-1] == 0.0
        assert row["mi"] == curve[0]
        if row["n_shared"]:
            n, k = len(row["vision_descriptors"]), row["n_shared"]
            assert row["mi"] == pytest.approx(np.log(n * 50 * k), abs=1e-6)
    for _, row in per_class.iterrows():
        assert row["auc_reference"] == pytest.approx(np.mean(row["curve"]))
    assert {"acc1_prompts", "acc1_prompts_descriptors", "acc1_gain"} <= set(result.metrics)
    enc = result.info["encoder_images"]
    assert enc["patch_token_images"] == 8
    assert enc["prompt_images"] == 3 * per_image["n_concepts"].sum()
    # one decode per selected image gave its whole-image embedding, pixels and patch tokens
    assert cache.stats.images_decoded == 8 and cache.stats.images_encoded == 8
    warm = EmbeddingCache(tmp_path / "cache", progress=False)  # a re-run decodes and encodes nothing
    again = run_concepts(tiny_rn, bundled_two_classes, warm, pool, classes=classes, images_per_class=4,
                         templates="name_only", config=ConceptConfig(n_parts=3, text_top_k=50))
    assert warm.stats.images_decoded == 0 and warm.stats.encoded == {} and again.info["encoder_images"] == {}
    pd.testing.assert_frame_equal(again.per_image, per_image)


def test_concepts_after_an_audit_pass_decode_nothing(tiny_rn, bundled_two_classes, tmp_path):
    """An audit that passes the concept images as ``patch_indices`` decodes each image once in all."""
    from analysis.cache import EmbeddingCache
    from analysis.concepts.pipeline import ConceptConfig, run_concepts, select_images

    ds, cache = bundled_two_classes, EmbeddingCache(tmp_path / "cache", progress=False)
    classes = [ds.classnames[1], ds.classnames[8]]
    chosen = np.concatenate(list(select_images(ds, classes, 3).values()))
    cache.image_views(tiny_rn, ds, ["none", "hflip"], patch_indices=chosen)
    assert cache.stats.images_decoded == len(ds) and cache.stats.images_encoded == 2 * len(ds)
    run_concepts(tiny_rn, ds, cache, load_descriptors("fashion-mnist"), classes=classes, images_per_class=3,
                 templates="name_only", config=ConceptConfig(n_parts=2, methods=("kmeans",)))
    assert cache.stats.images_decoded == len(ds) and cache.stats.images_encoded == 2 * len(ds)
    assert cache.stats.encoded["patch-tokens"] == len(chosen)


def test_cli_concepts_writes_tables_and_figures(tmp_path, bundled_two_classes):
    from analysis.cli import main
    from analysis.results import read_run

    names = bundled_two_classes.classnames
    results = tmp_path / "results"
    code = main(["concepts", "--model", "clipaudit-tiny-rn", "--dataset", "bundled", "--limit", "60",
                 "--classes", names[1], names[8], "--images-per-class", "3", "--templates", "name_only",
                 "--out", str(results), "--cache-dir", str(tmp_path / "cache"), "--quiet",
                 "--parts", "2", "--device", "cpu"])
    assert code == 0
    (path,) = (results / "concepts").glob("*.json")
    record, tables = read_run(path)
    assert set(tables) == {"per_image", "per_class", "curves"}
    assert len(record["figures"]) == 2 and len(record["files"]) == 2
    for rel in record["files"].values():  # figure files, relative to the task folder
        png = results / "concepts" / rel
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_full_run_on_clipaudit_lit_two_bundled_classes(bundled_two_classes, tmp_path):
    """Issue 6: the whole pipeline on the shipped demo model (7x7 CNN feature map) for two bundled classes."""
    from analysis.cache import EmbeddingCache
    from analysis.concepts.pipeline import run_concepts
    from analysis.models import load_model

    model = load_model("clipaudit-lit")
    names = bundled_two_classes.classnames
    classes = [names[1], names[8]]  # trousers, bag
    result = run_concepts(model, bundled_two_classes, EmbeddingCache(tmp_path / "c", progress=False),
                          load_descriptors("fashion-mnist"), classes=classes, images_per_class=4)
    assert set(result.per_class["class"]) == set(classes)
    assert result.info["encoder_images"]["patch_token_images"] == 8
    assert (result.per_image["n_concepts"] > 0).all()
    # descriptors come from the shipped pool; the text side holds the 50 nearest to the predicted class
    pool = set(load_descriptors("fashion-mnist").descriptors)
    for descs in result.per_image["vision_descriptors"]:
        assert set(descs) <= pool
    assert np.isfinite(result.per_class["auc_reference"]).all()
