"""Selective prediction and calibration metrics against hand computations and direct definitions."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from analysis._checks import ClipauditError
from analysis.selective import (
    _select_thresholds,
    _tie_groups,
    aurc,
    correctness_auroc,
    e_aurc,
    expected_calibration_error,
    oracle_aurc,
    recommend_threshold,
    risk_coverage_curve,
    selective_accuracy,
)

# hand example: one tie (0.8) between a correct and a wrong prediction
S = np.array([0.9, 0.8, 0.8, 0.3])
C = np.array([True, False, True, False])


def _pairs_auroc(s, c):
    """Mann-Whitney: P(score of a correct > score of a wrong), ties count 1/2."""
    pos, neg = s[c], s[~c]
    return np.mean([(p > q) + 0.5 * (p == q) for p in pos for q in neg])


def _risk_of_order(c_in_order):
    k = np.arange(1, len(c_in_order) + 1)
    return np.cumsum(~c_in_order) / k


def test_auroc_hand_example_and_pair_count():
    # pairs (correct, wrong): (0.9, 0.8)=1, (0.9, 0.3)=1, (0.8, 0.8)=1/2, (0.8, 0.3)=1 -> 3.5 / 4
    assert correctness_auroc(S, C) == pytest.approx(0.875)
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 40) / 4  # many ties
    c = rng.random(40) < 0.5
    assert correctness_auroc(s, c) == pytest.approx(_pairs_auroc(s, c))


def test_auroc_undefined_with_one_class():
    assert math.isnan(correctness_auroc(S, np.ones(4, bool)))
    assert math.isnan(correctness_auroc(S, np.zeros(4, bool)))


def test_risk_coverage_hand_example():
    cov, risk, thr = risk_coverage_curve(S, C)
    # k=1: 0 errors; k=2: half of the tie group's error -> 0.5/2; k=3: 1/3; k=4: 2/4
    np.testing.assert_allclose(cov, [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(risk, [0.0, 0.25, 1 / 3, 0.5])
    np.testing.assert_allclose(thr, [0.9, 0.8, 0.8, 0.3])
    # the tie rule = mean over both orders of the tied pair
    a = _risk_of_order(np.array([True, True, False, False]))
    b = _risk_of_order(np.array([True, False, True, False]))
    np.testing.assert_allclose(risk, (a + b) / 2)


def test_risk_coverage_tie_rule_is_mean_over_all_tie_orders():
    s = np.array([0.7, 0.5, 0.5, 0.5, 0.2])
    c = np.array([False, True, False, True, True])
    tied = [1, 2, 3]
    curves = []
    for perm in itertools.permutations(tied):
        order = [0, *perm, 4]
        curves.append(_risk_of_order(c[order]))
    np.testing.assert_allclose(risk_coverage_curve(s, c)[1], np.mean(curves, axis=0))


def test_risk_coverage_does_not_depend_on_input_order():
    rng = np.random.default_rng(1)
    s = rng.integers(0, 4, 30).astype(float)
    c = rng.random(30) < 0.6
    perm = rng.permutation(30)
    np.testing.assert_allclose(risk_coverage_curve(s, c)[1], risk_coverage_curve(s[perm], c[perm])[1])


def test_aurc_and_e_aurc_hand_example():
    assert aurc(S, C) == pytest.approx((0 + 0.25 + 1 / 3 + 0.5) / 4)
    # oracle: both correct first -> risks 0, 0, 1/3, 2/4
    assert oracle_aurc(C) == pytest.approx((0 + 0 + 1 / 3 + 0.5) / 4)
    assert e_aurc(S, C) == pytest.approx(0.25 / 4)
    # a perfect ranking has zero excess
    assert e_aurc(C.astype(float) + 1.0, C) == pytest.approx(0.0)


def test_oracle_aurc_matches_geifman_closed_form_for_large_n():
    n, r = 20000, 0.3
    c = np.arange(n) >= r * n  # 30% wrong
    assert oracle_aurc(c) == pytest.approx(r + (1 - r) * math.log(1 - r), abs=1e-3)


def test_selective_accuracy_hand_example():
    n_kept, acc = selective_accuracy(S, C, [0.25, 0.5, 0.6, 1.0])
    np.testing.assert_array_equal(n_kept, [1, 2, 3, 4])  # ceil(c * 4)
    np.testing.assert_allclose(acc, [1.0, 0.75, 2 / 3, 0.5])
    with pytest.raises(ClipauditError, match="coverages"):
        selective_accuracy(S, C, [0.0])


def test_ece_hand_example():
    conf = np.array([0.95, 0.95, 0.5, 0.52, 0.1])  # bins 14, 14, 7, 7, 1 (of 15)
    correct = np.array([1, 0, 1, 1, 0], dtype=bool)
    expected = 2 / 5 * abs(0.5 - 0.95) + 2 / 5 * abs(1 - 0.51) + 1 / 5 * abs(0 - 0.1)
    assert expected_calibration_error(conf, correct) == pytest.approx(expected)


def test_ece_matches_direct_binning():
    rng = np.random.default_rng(2)
    conf = rng.random(500) * 0.999
    correct = rng.random(500) < conf
    bins = np.floor(conf * 15).astype(int)
    direct = sum(
        (bins == b).mean() * abs(correct[bins == b].mean() - conf[bins == b].mean())
        for b in np.unique(bins)
    )
    assert expected_calibration_error(conf, correct) == pytest.approx(direct)


def test_ece_of_msp_is_top_label_multiclass_ece():
    import torch
    from scipy.special import softmax
    from torchmetrics.functional.classification import multiclass_calibration_error

    rng = np.random.default_rng(3)
    probs = softmax(3 * rng.normal(size=(200, 6)), axis=1)
    labels = rng.integers(0, 6, 200)
    ours = expected_calibration_error(probs.max(1), probs.argmax(1) == labels)
    ref = multiclass_calibration_error(torch.from_numpy(probs), torch.from_numpy(labels), num_classes=6, n_bins=15)
    assert ours == pytest.approx(float(ref))


def test_ece_refuses_non_probabilities():
    with pytest.raises(ClipauditError, match=r"confidence must lie in \[0, 1\]"):
        expected_calibration_error(np.array([0.2, 1.3]), np.array([True, False]))


def test_input_errors_name_the_argument():
    with pytest.raises(ClipauditError, match="same length"):
        aurc(S, C[:3])
    with pytest.raises(ClipauditError, match="scores must be finite"):
        aurc(np.array([0.1, np.nan]), np.array([True, False]))
    with pytest.raises(ClipauditError, match="correct must be boolean"):
        aurc(S, np.array([0, 1, 2, 1]))


# --------------------------------------------------------------------------------------- thresholds
def _brute_force_threshold(s, c, target):
    """Among thresholds at observed scores, the one keeping the most samples with accuracy >= target."""
    best = None
    for v in np.unique(s):
        kept = s >= v
        if c[kept].mean() >= target - 1e-12 and (best is None or kept.sum() > (s >= best).sum()):
            best = v
    return best


def test_threshold_known_answer_non_monotone():
    # 20 samples by decreasing score; an early error makes accuracy dip below target at k=5,
    # but the largest coverage meeting 0.9 is k=15 (14/15); k=16..20 fall below.
    correct = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1], dtype=bool)
    scores = np.linspace(1.0, 0.05, 20)
    rec = recommend_threshold(scores, correct, target_accuracy=0.9, n_boot=50)
    assert rec.achievable
    assert rec.threshold == pytest.approx(scores[14])
    assert rec.n_kept == 15 and rec.coverage == pytest.approx(0.75)
    assert rec.accuracy == pytest.approx(14 / 15)


def test_threshold_never_splits_a_tie_group():
    scores = np.array([1.0, 0.9, 0.8, 0.8, 0.7])
    correct = np.array([1, 1, 1, 0, 0], dtype=bool)
    rec = recommend_threshold(scores, correct, target_accuracy=0.75, n_boot=20)
    assert (rec.threshold, rec.n_kept, rec.accuracy) == (0.8, 4, 0.75)
    # keeping 3 would reach 1.0 but needs splitting the 0.8 tie, so 0.8 falls back to 2 samples
    rec = recommend_threshold(scores, correct, target_accuracy=0.8, n_boot=20)
    assert (rec.threshold, rec.n_kept) == (0.9, 2)
    same = recommend_threshold(scores, correct, max_risk=0.2, n_boot=20)
    assert same.threshold == rec.threshold and same.target_accuracy == pytest.approx(0.8)


def test_threshold_matches_brute_force():
    rng = np.random.default_rng(4)
    for _ in range(5):
        s = rng.integers(0, 12, 60) / 11
        c = rng.random(60) < 0.3 + 0.6 * s
        for target in (0.6, 0.8, 0.9):
            expected = _brute_force_threshold(s, c, target)
            rec = recommend_threshold(s, c, target_accuracy=target, n_boot=10)
            if expected is None:
                assert not rec.achievable and rec.threshold == math.inf and rec.n_kept == 0
            else:
                assert rec.threshold == expected and rec.n_kept == int((s >= expected).sum())


def test_unreachable_target():
    rec = recommend_threshold(S, np.zeros(4, bool), target_accuracy=0.5, n_boot=10)
    assert not rec.achievable and rec.threshold == math.inf and rec.coverage == 0 and math.isnan(rec.accuracy)


def test_threshold_argument_errors():
    with pytest.raises(ClipauditError, match="exactly one of target_accuracy and max_risk"):
        recommend_threshold(S, C)
    with pytest.raises(ClipauditError, match="target_accuracy"):
        recommend_threshold(S, C, target_accuracy=1.5)


def test_resample_weights_equal_explicit_resampling():
    """The bootstrap re-selects thresholds from counts over one sort; check against resampled data."""
    rng = np.random.default_rng(5)
    s = rng.integers(0, 8, 50) / 7
    c = rng.random(50) < 0.4 + 0.5 * s
    order = np.argsort(-s, kind="stable")
    s_sorted, c_sorted = s[order], c[order]
    start, end = _tie_groups(s_sorted)
    idx = rng.integers(0, 50, (20, 50))
    counts = np.stack([np.bincount(row, minlength=50) for row in idx])[:, order].astype(float)
    got = _select_thresholds(counts, s_sorted, c_sorted, start, end, 0.8)
    for row, g in zip(idx, got):
        expected = _brute_force_threshold(s[row], c[row], 0.8)
        assert (math.isnan(g) and expected is None) or g == expected


def test_bootstrap_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(6)
    s = rng.random(400)
    c = rng.random(400) < s
    a = recommend_threshold(s, c, target_accuracy=0.8, n_boot=200, seed=1)
    b = recommend_threshold(s, c, target_accuracy=0.8, n_boot=200, seed=1)
    d = recommend_threshold(s, c, target_accuracy=0.8, n_boot=200, seed=2)
    assert a == b
    assert a.as_dict() != d.as_dict()
    assert a.threshold_ci_low <= a.threshold <= a.threshold_ci_high
    assert a.coverage_ci_low <= a.coverage <= a.coverage_ci_high
    assert a.accuracy_ci_low <= a.accuracy <= a.accuracy_ci_high
    assert a.accuracy_ci_low < a.accuracy_ci_high and a.n_boot == 200 and a.seed == 1
