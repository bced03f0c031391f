"""Pure stages of the mutual-knowledge pipeline: spectral foreground, CRF, concept clusters, visual prompts."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from analysis._checks import ClipauditError
from analysis.concepts.clusters import concept_labels, kmeans_parts, label_maps, pca_parts
from analysis.concepts.crf import refine_mask
from analysis.concepts.spectral import (
    apply_sign_rule,
    foreground_masks,
    largest_regions,
    threshold_scores,
    upsample_masks,
)
from analysis.concepts.visual_prompts import Ellipse, concept_prompts, draw_prompts, fit_ellipse, fit_inside


def two_region_tokens(grid=(7, 9), n_images=3, dim=16, seed=0):
    """Tokens = a large shared direction + one of two directions (object / background) + noise."""
    rng = np.random.default_rng(seed)
    h, w = grid
    common, obj, bg = 4 * rng.normal(size=dim), rng.normal(size=dim), rng.normal(size=dim)
    truth = np.zeros((n_images, h, w), bool)
    for i in range(n_images):  # a rectangle at a different place in each image
        r, c = 1 + i % 3, 2 + i % 4
        truth[i, r:r + 3, c:c + 3] = True
    tokens = np.where(truth.reshape(n_images, -1, 1), common + obj, common + bg)
    return tokens + 0.05 * rng.normal(size=tokens.shape), truth


def test_spectral_foreground_recovers_object_on_non_square_grid():
    tokens, truth = two_region_tokens()
    masks = foreground_masks(tokens, (7, 9))
    assert masks.shape == truth.shape
    np.testing.assert_array_equal(masks, truth)


def test_spectral_pca_option_recovers_object():
    tokens, truth = two_region_tokens(grid=(7, 7), seed=1)
    np.testing.assert_array_equal(foreground_masks(tokens, (7, 7), method="pca"), truth)


def test_grid_must_match_tokens():
    tokens, _ = two_region_tokens()
    with pytest.raises(ClipauditError, match="grid"):
        foreground_masks(tokens, (8, 8))
    with pytest.raises(ClipauditError, match="method"):
        foreground_masks(tokens, (7, 9), method="eig")


def test_sign_rule_makes_positive_side_minority():
    comps = np.array([[1.0, -1.0, 1.0], [2.0, -2.0, 1.0], [-1.0, 3.0, 1.0], [0.5, -1.0, 1.0]])
    out = apply_sign_rule(comps)
    # column 0: 3/4 positive -> flipped; column 1: 1/4 positive -> kept; column 2: all positive -> kept
    np.testing.assert_array_equal(out[:, 0], -comps[:, 0])
    np.testing.assert_array_equal(out[:, 1:], comps[:, 1:])


def test_threshold_minmax_variant():
    scores = np.array([[-1.0, -0.2], [0.0, 1.0]])
    np.testing.assert_array_equal(threshold_scores(scores), [[False, False], [True, True]])
    # min-max: (s + 1) / 2 -> [0, .4, .5, 1]; >= 0.4
    np.testing.assert_array_equal(threshold_scores(scores, by_negative=False), [[False, True], [True, True]])


def test_largest_regions_eight_connectivity_and_second_rule():
    mask = np.zeros((8, 8), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # diagonal: one 8-connected region of 3
    mask[5:7, 5:8] = True  # 6 cells: the largest
    mask[0, 7] = True  # a single cell: dropped
    out = largest_regions(mask)
    expected = np.zeros_like(mask)
    expected[5:7, 5:8] = True
    np.testing.assert_array_equal(out, expected)  # second region has 3 < 5 cells
    mask[3, 3] = mask[4, 4] = True  # diagonal grows to 5 cells: kept
    out = largest_regions(mask)
    assert out.sum() == 11 and not out[0, 7]
    assert not largest_regions(np.zeros((3, 3), bool)).any()


def test_upsample_nearest():
    masks = np.array([[[True, False], [False, True]]])
    up = upsample_masks(masks, (4, 6))
    assert up.dtype == bool and up.shape == (1, 4, 6)
    np.testing.assert_array_equal(up[0, :2, :3], True)
    np.testing.assert_array_equal(up[0, :2, 3:], False)


def square_image(size=64, lo=20, hi=44):
    img = np.full((size, size, 3), 30, np.uint8)
    img[lo:hi, lo:hi] = (220, 200, 40)
    truth = np.zeros((size, size), bool)
    truth[lo:hi, lo:hi] = True
    return img, truth


def iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_crf_moves_a_blocky_noisy_mask_toward_the_image_edge():
    img, truth = square_image()
    rng = np.random.default_rng(0)
    noisy = np.zeros_like(truth)
    noisy[14:50, 14:50] = True  # a patch-sized overshoot of 6 px on every side
    noisy ^= rng.random(truth.shape) < 0.05  # salt-and-pepper flips
    refined = refine_mask(img, noisy)
    assert refined.dtype == bool and refined.shape == truth.shape
    assert iou(refined, truth) > iou(noisy, truth) + 0.1
    assert (refined != noisy).any()


def test_crf_rejects_mismatched_shapes():
    img, truth = square_image()
    with pytest.raises(ClipauditError, match="mask shape"):
        refine_mask(img[:32], truth)


def test_pca_parts_matches_direct_computation():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6))
    scores = PCA(n_components=3, random_state=0).fit_transform(x)
    scaled = (scores - scores.min(0)) / (scores.max(0) - scores.min(0))
    np.testing.assert_array_equal(pca_parts(x, n_parts=3), scaled.argmax(1))


def test_kmeans_parts_separates_clusters_seeded_and_stable_ids():
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 5 + 1
    x = np.concatenate([c + 0.05 * rng.normal(size=(10, 4)) for c in centres])
    labels = kmeans_parts(x, n_parts=3)
    np.testing.assert_array_equal(labels, np.repeat([0, 1, 2], 10))  # renumbered by first appearance
    np.testing.assert_array_equal(kmeans_parts(x, n_parts=3), labels)
    assert kmeans_parts(x[:2], n_parts=5).max() <= 1  # fewer tokens than parts


def test_concept_labels_background_and_maps():
    tokens, truth = two_region_tokens(grid=(4, 4), n_images=2)
    labels = concept_labels(tokens, truth, method="kmeans", n_parts=2)
    assert (labels[~truth] == -1).all() and (labels[truth] >= 0).all()
    refined = np.zeros((2, 8, 8), bool)
    refined[:, :4] = True
    maps = label_maps(labels, (8, 8), refined)
    assert (maps[:, 4:] == -1).all()
    np.testing.assert_array_equal(maps[:, ::2, ::2][:, :2], labels[:, :2])


def test_prompts_stay_inside_image_bounds_for_a_corner_region():
    img = np.full((48, 64, 3), 128, np.uint8)
    label_map = np.full((48, 64), -1)
    label_map[:20, 40:] = 3  # touches the top and right borders
    ellipse = fit_ellipse(label_map == 3)
    inside = fit_inside(ellipse, label_map.shape)
    center, axes, angle = inside.cv()
    poly = cv2.ellipse2Poly(center, axes, angle, 0, 360, 1)
    assert (poly[:, 0] >= 0).all() and (poly[:, 0] <= 63).all()
    assert (poly[:, 1] >= 0).all() and (poly[:, 1] <= 47).all()
    concepts, prompts = concept_prompts(img, label_map)
    assert concepts == [3] and prompts.shape == (1, 3, 48, 64, 3)
    red = (prompts[0, 0] == (255, 0, 0)).all(-1)
    # the whole outline is drawn: the red pixels span the polygon's full bounding box (nothing clipped)
    ys, xs = np.nonzero(red)
    assert abs(xs.min() - poly[:, 0].min()) <= 1 and abs(xs.max() - poly[:, 0].max()) <= 1
    assert abs(ys.min() - poly[:, 1].min()) <= 1 and abs(ys.max() - poly[:, 1].max()) <= 1


def test_prompt_variants_grey_and_blur_only_outside():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    ell = Ellipse((20.0, 20.0), (16.0, 12.0), 0.0)
    plain, grey, blur = draw_prompts(img, ell)
    inside = np.zeros((40, 40), np.uint8)
    cv2.ellipse(inside, (20, 20), (8, 6), 0, 0, 360, 1, thickness=-1)
    ring = np.zeros((40, 40), np.uint8)
    cv2.ellipse(ring, (20, 20), (8, 6), 0, 0, 360, 1, thickness=3)
    core = inside.astype(bool) & ~ring.astype(bool)
    far = ~inside.astype(bool) & ~ring.astype(bool)
    for prompted in (plain, grey, blur):
        np.testing.assert_array_equal(prompted[core], img[core])
    np.testing.assert_array_equal(plain[far], img[far])
    assert (grey[far][:, 0] == grey[far][:, 1]).all() and (grey[far][:, 1] == grey[far][:, 2]).all()
    expected_blur = cv2.GaussianBlur(img, (11, 11), 0)
    np.testing.assert_array_equal(blur[far], expected_blur[far])


def test_tiny_region_gets_deterministic_ellipse():
    region = np.zeros((10, 10), bool)
    region[4, 4:6] = True  # 2 pixels: too few contour points for fitEllipse
    e1, e2 = fit_ellipse(region), fit_ellipse(region)
    assert e1 == e2 and e1.center == (4.5, 4.0)
    assert fit_ellipse(np.zeros((5, 5), bool)) is None
