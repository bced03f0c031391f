"""Conformal sets: APS/RAPS scores against a loop, the quantile rank, and the coverage guarantee statistically."""

from __future__ import annotations

import math

import numpy as np
import pytest

from analysis._checks import ClipauditError
from analysis.conformal import all_scores, conformal_quantile, conformal_scores, prediction_sets, set_metrics


def _small_probs(seed=0, n=40, n_classes=6):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.full(n_classes, 0.7), size=n)
    p[:5] = np.round(p[:5], 1)  # ties inside a row (order: lower class index first)
    p[:5] /= p[:5].sum(1, keepdims=True)
    return p, rng.integers(0, n_classes, n)


def _loop_score(p_row, y, u, lam, k_reg):
    ranking = sorted(range(len(p_row)), key=lambda c: (-p_row[c], c))
    pos = ranking.index(y)
    rho = sum(p_row[ranking[j]] for j in range(pos))
    return rho + u * p_row[y] + lam * max(0, pos + 1 - k_reg)


@pytest.mark.parametrize("method, lam, k_reg", [("aps", 0.0, 0), ("raps", 0.05, 2), ("raps", 0.2, 0)])
@pytest.mark.parametrize("randomized", [True, False])
def test_scores_match_a_plain_loop(method, lam, k_reg, randomized):
    p, y = _small_probs()
    u = np.random.default_rng(7).random(len(y)) if randomized else np.ones(len(y))
    got = conformal_scores(p, y, method=method, lam=lam, k_reg=k_reg, rng=7, randomized=randomized)
    want = [_loop_score(p[i], y[i], u[i], lam if method == "raps" else 0.0, k_reg) for i in range(len(y))]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    full = all_scores(p, method=method, lam=lam, k_reg=k_reg, rng=7, randomized=randomized)
    np.testing.assert_array_equal(full[np.arange(len(y)), y], got)


@pytest.mark.parametrize("randomized", [True, False])
def test_sets_are_the_classes_scoring_below_qhat(randomized):
    p, _ = _small_probs(seed=1)
    for q in (0.3, 0.7, 0.95, 1.2):
        sets = prediction_sets(p, q, method="raps", lam=0.1, k_reg=1, rng=3, randomized=randomized,
                               allow_empty=True)
        scores = all_scores(p, method="raps", lam=0.1, k_reg=1, rng=3, randomized=randomized)
        for i in range(len(p)):
            want = {c for c in range(p.shape[1]) if scores[i, c] <= q}
            assert set(np.flatnonzero(sets[i])) == want
            ranking = sorted(range(p.shape[1]), key=lambda c: (-p[i, c], c))
            assert [ranking[j] for j in range(len(want))] == sorted(want, key=ranking.index)  # a prefix


def test_deterministic_sets_are_never_empty_and_inf_gives_every_class():
    p, _ = _small_probs(seed=2, n=200)
    sets = prediction_sets(p, 0.05, randomized=False)
    assert sets.sum(1).min() >= 1
    assert np.array_equal(np.flatnonzero(sets[sets.sum(1) == 1].any(0)),
                          np.unique(p[sets.sum(1) == 1].argmax(1)))  # the kept class is the top-1
    assert prediction_sets(p, 0.05, rng=0).sum(1).min() == 0  # randomised sets may be empty (exact coverage)
    assert prediction_sets(p, 0.05, rng=0, allow_empty=False).sum(1).min() >= 1
    assert prediction_sets(p, math.inf, rng=0).all()


def test_quantile_is_the_ceil_rank_and_flags_too_few_samples():
    rng = np.random.default_rng(3)
    for n in (1, 9, 10, 19, 57, 500):
        s = rng.random(n)
        for alpha in (0.05, 0.1, 0.2, 0.3, 0.5):
            q, finite = conformal_quantile(s, alpha)
            k = math.ceil(round((n + 1) * (1 - alpha), 9))
            if k > n:
                assert (q, finite) == (math.inf, False)
            else:
                assert finite and q == sorted(s)[k - 1]
                assert q == np.quantile(s, k / n, method="inverted_cdf")
    assert conformal_quantile(np.arange(9.0), 0.1) == (8.0, True)  # (9 + 1) * 0.9 = 9: the 9th, not the 10th
    assert conformal_quantile(np.arange(8.0), 0.1).finite is False


def test_set_metrics_match_direct_counts():
    rng = np.random.default_rng(4)
    sets = rng.random((300, 5)) < 0.4
    y = rng.integers(0, 4, 300)  # class 4 never occurs
    m = set_metrics(sets, y, class_names=list("abcde"))
    covered = [sets[i, y[i]] for i in range(300)]
    sizes = [int(sets[i].sum()) for i in range(300)]
    assert m["coverage"] == pytest.approx(np.mean(covered)) and m["n"] == 300
    assert m["mean_size"] == pytest.approx(np.mean(sizes)) and m["median_size"] == np.median(sizes)
    assert m["empty_fraction"] == pytest.approx(sizes.count(0) / 300)
    assert m["singleton_fraction"] == pytest.approx(sizes.count(1) / 300)
    hist = m["size_histogram"]
    assert hist["size"].tolist() == sorted(set(sizes))
    assert hist["count"].tolist() == [sizes.count(s) for s in sorted(set(sizes))]
    pc = m["per_class"]
    assert pc["class"].tolist() == [0, 1, 2, 3] and pc["class_name"].tolist() == list("abcd")
    for _, row in pc.iterrows():
        idx = [i for i in range(300) if y[i] == row["class"]]
        assert row["n"] == len(idx) and row["covered"] == sum(covered[i] for i in idx)
        assert row["coverage"] == pytest.approx(np.mean([covered[i] for i in idx]))
        assert row["mean_size"] == pytest.approx(np.mean([sizes[i] for i in idx]))
    assert m["min_class_coverage"] == pytest.approx(pc["coverage"].min())
    assert not pc.isna().any().any()


def test_bad_inputs_raise_clear_errors():
    p, y = _small_probs()
    with pytest.raises(ClipauditError, match="aps"):
        conformal_scores(p, y, method="rap")
    with pytest.raises(ClipauditError, match="alpha"):
        conformal_quantile(np.ones(10), 1.0)
    with pytest.raises(ClipauditError, match="labels"):
        conformal_scores(p, y + 10)
    with pytest.raises(ClipauditError, match="qhat"):
        prediction_sets(p, float("nan"))
    with pytest.raises(ClipauditError, match="probabilities"):
        conformal_scores(p * 3, y)


# ---------------------------------------------------------------- the coverage guarantee, statistically
N_DRAWS, N_CAL, N_TEST, N_CLASSES, ALPHA = 300, 500, 1000, 10, 0.1


def _population(rng, n):
    """True class probabilities from a Dirichlet, labels drawn from them; the model reports a sharpened,
    mis-calibrated version (the guarantee does not need calibrated probabilities)."""
    true = rng.dirichlet(np.full(N_CLASSES, 0.3), size=n)
    y = (rng.random((n, 1)) > np.cumsum(true, axis=1)).sum(axis=1).clip(max=N_CLASSES - 1)
    model = true**2 + 1e-12
    return model / model.sum(1, keepdims=True), y


def _coverages(method, randomized):
    rng = np.random.default_rng(20)
    out = np.empty(N_DRAWS)
    kw = {"method": method, "lam": 0.05, "k_reg": 2, "randomized": randomized}
    for d in range(N_DRAWS):
        p, y = _population(rng, N_CAL + N_TEST)
        q, finite = conformal_quantile(conformal_scores(p[:N_CAL], y[:N_CAL], rng=rng, **kw), ALPHA)
        assert finite
        sets = prediction_sets(p[N_CAL:], q, rng=rng, **kw)
        out[d] = sets[np.arange(N_TEST), y[N_CAL:]].mean()
    return out


@pytest.mark.parametrize("method", ["aps", "raps"])
def test_randomized_coverage_is_exact_in_distribution(method):
    """Given the calibration data, coverage is Beta(k, n + 1 - k), k = ceil((n + 1)(1 - alpha)); the test set
    adds binomial noise. Mean and spread of the per-draw coverage must match."""
    cov = _coverages(method, True)
    k = math.ceil((N_CAL + 1) * (1 - ALPHA))
    mean = k / (N_CAL + 1)
    var_beta = k * (N_CAL + 1 - k) / ((N_CAL + 1) ** 2 * (N_CAL + 2))
    var = var_beta + (mean - var_beta - mean**2) / N_TEST
    se = math.sqrt(var / N_DRAWS)
    assert abs(cov.mean() - mean) <= 4 * se, (cov.mean(), mean)
    assert 1 - ALPHA - 4 * se <= cov.mean() <= 1 - ALPHA + 1 / (N_CAL + 1) + 4 * se
    assert 0.7 <= cov.var(ddof=1) / var <= 1.4, cov.var(ddof=1) / var


@pytest.mark.parametrize("method", ["aps", "raps"])
def test_deterministic_coverage_is_at_least_one_minus_alpha(method):
    cov = _coverages(method, False)
    assert cov.mean() >= 1 - ALPHA - 4 * cov.std(ddof=1) / math.sqrt(N_DRAWS)
