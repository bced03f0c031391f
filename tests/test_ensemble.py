"""The cached prompt ensemble equals open_clip's own zero-shot classifier builder."""

from __future__ import annotations

import numpy as np
import open_clip

from analysis.data import load_templates
from analysis.ensemble import ensemble_weights, logits


def test_ensemble_matches_open_clip_builder(tiny_vit, cache):
    classes = ["cat", "dog", "sneaker", "ankle boot"]
    tset = load_templates("simple_imagenet")
    ours = ensemble_weights(cache.class_embeddings(tiny_vit, classes, tset))
    ref = open_clip.build_zero_shot_classifier(
        tiny_vit.module, tiny_vit._tokenizer, classes, open_clip.zero_shot_metadata.SIMPLE_IMAGENET_TEMPLATES,
        num_classes_per_batch=3,
    ).T.numpy()
    # stored as float16 in the cache: agreement to half precision
    np.testing.assert_allclose(ours, ref, atol=2e-3)


def test_builtin_templates_come_from_open_clip():
    tset = load_templates("openai_imagenet")
    expected = [t("X") for t in open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES]
    assert [t.format("X") for t in tset.templates] == expected
    assert len(tset) == 80


def test_logits_formula():
    rng = np.random.default_rng(1)
    f, w = rng.normal(size=(5, 8)), rng.normal(size=(3, 8))
    np.testing.assert_allclose(logits(f, w, 10.0, -2.0), 10 * np.einsum("nd,cd->nc", f, w) - 2, rtol=1e-5)
