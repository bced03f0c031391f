"""Guaranteed thresholds: Clopper-Pearson, LTT and SGR against direct computations, and the guarantee itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis._checks import ClipauditError
from analysis.guarantees import clopper_pearson_upper, guaranteed_threshold, selective_outcome


# ---------------------------------------------------------------- Clopper-Pearson
def test_clopper_pearson_matches_scipy_beta():
    rng = np.random.default_rng(0)
    n = rng.integers(1, 400, size=300)
    e = (rng.random(300) * n).astype(int)
    for delta in (0.01, 0.1, 0.3):
        got = clopper_pearson_upper(e, n, delta)
        want = stats.beta.ppf(1 - delta, e + 1, n - e)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)
    assert clopper_pearson_upper(7, 7, 0.1) == 1.0
    assert clopper_pearson_upper(0, 0, 0.1) == 1.0
    assert isinstance(clopper_pearson_upper(2, 10, 0.1), float)
    np.testing.assert_array_equal(clopper_pearson_upper([0, 3], [0, 3], 0.2), [1.0, 1.0])


@pytest.mark.parametrize("delta", [0.05, 0.1, 0.3])
def test_clopper_pearson_is_the_binomial_tail_inversion(delta):
    """Brute force: the smallest rate b on a fine grid with P(X <= e | n, b) <= delta."""
    grid = np.linspace(0, 1, 20_001)
    for n in range(1, 13):
        for e in range(n):
            b = grid[np.argmax(stats.binom.cdf(e, n, grid) <= delta)]
            assert abs(clopper_pearson_upper(e, n, delta) - b) <= 1e-4 + 1e-12, (n, e)


def test_clopper_pearson_covers_with_probability_one_minus_delta():
    """Exact: for every true rate r, P_e(r > UCB(e)) = sum of binomial pmf over the e whose bound misses r."""
    delta = 0.1
    for n in (5, 20, 80):
        ucb = clopper_pearson_upper(np.arange(n + 1), n, delta)
        for r in np.linspace(0.001, 0.999, 101):
            miss = stats.binom.pmf(np.arange(n + 1), n, r)[ucb < r].sum()
            assert miss <= delta + 1e-9, (n, r, miss)


def test_clopper_pearson_rejects_impossible_counts():
    with pytest.raises(ClipauditError):
        clopper_pearson_upper(5, 3, 0.1)
    with pytest.raises(ClipauditError):
        clopper_pearson_upper(1, 3, 1.0)


# ---------------------------------------------------------------- LTT and SGR against direct loops
def _ltt_loop(s, c, target, delta, starts=1):
    """Fallback testing written out (one start = fixed-sequence testing): thresholds from the highest down;
    share delta/starts at the first threshold keeping >= k0 * (top/k0)^(i/(starts-1)) samples, k0 the least k
    with (1 - r*)^k <= delta/starts, top = max(k0, n/2); a rejected hypothesis passes its level to the next."""
    r = 1 - target
    lv = delta / starts
    k0 = 1
    while stats.binom.cdf(0, k0, r) > lv:
        k0 += 1
    top = max(k0, len(s) / 2)
    counts = [k0 * (top / k0) ** (i / (starts - 1)) if starts > 1 else k0 for i in range(starts)]
    thresholds = sorted(set(s.tolist()), reverse=True)
    kept_counts = [int(np.sum(s >= t)) for t in thresholds]
    alloc = [0.0] * len(thresholds)
    for cnt in counts:
        j = next((j for j, k in enumerate(kept_counts) if k >= cnt), None)
        if j is not None:
            alloc[j] += lv
    chosen, level, previous_rejected = None, 0.0, False
    for j, t in enumerate(thresholds):
        level = alloc[j] + (level if previous_rejected else 0.0)
        kept = [ci for si, ci in zip(s, c) if si >= t]
        k, e = len(kept), sum(1 for ci in kept if not ci)
        previous_rejected = level > 0 and stats.binom.cdf(e, k, r) <= level
        if previous_rejected:
            chosen = (t, k, e)
    return chosen


def _sgr_loop(s, c, target, delta):
    """Algorithm 1 of Geifman & El-Yaniv (2017), 1-indexed; the last step whose bound is <= r*."""
    r = 1 - target
    m = len(s)
    steps = max(1, math.ceil(math.log2(m)))
    asc = sorted(s.tolist())
    z_min, z_max, out = 1, m, None
    for _ in range(steps):
        z = math.ceil((z_min + z_max) / 2)
        theta = asc[z - 1]
        kept = [ci for si, ci in zip(s, c) if si >= theta]
        k, e = len(kept), sum(1 for ci in kept if not ci)
        b = 1.0 if e == k else stats.beta.ppf(1 - delta / steps, e + 1, k - e)
        if b <= r:
            out, z_max = (theta, k, e), z
        else:
            z_min = z
    return out


def _random_case(rng):
    n = int(rng.integers(3, 120))
    s = np.round(rng.random(n), int(rng.integers(1, 3)))  # 1-2 decimals: many ties
    c = rng.random(n) < 0.55 + 0.45 * s
    return s, c


@pytest.mark.parametrize("method, starts", [("ltt", 1), ("ltt", 3), ("sgr", 1)])
def test_methods_match_a_direct_loop(method, starts):
    rng = np.random.default_rng(1)
    n_achievable = 0
    for _ in range(100):
        s, c = _random_case(rng)
        target, delta = float(rng.uniform(0.6, 0.97)), float(rng.choice([0.05, 0.1, 0.2]))
        g = guaranteed_threshold(s, c, target_accuracy=target, delta=delta, method=method, ltt_starts=starts)
        want = _ltt_loop(s, c, target, delta, starts) if method == "ltt" else _sgr_loop(s, c, target, delta)
        assert g.achievable == (want is not None)
        if want is None:
            assert g.threshold is None and g.coverage == 0.0 and g.n_selected == 0 and g.bound is None
            continue
        n_achievable += 1
        assert (g.threshold, g.n_selected, g.errors) == want
        assert g.coverage == want[1] / len(s)
        assert g.bound == pytest.approx(clopper_pearson_upper(want[2], want[1], g.per_test_delta), abs=1e-12)
        assert g.bound <= 1 - target + 1e-12
        # a threshold keeps every tied score
        assert g.n_selected == int((s >= g.threshold).sum())
    assert 15 <= n_achievable <= 90  # both branches exercised


def test_ltt_on_a_hand_made_example():
    # 30 correct high scores, then alternating; r* = 0.2, delta = 0.1 -> k_min = 11 (0.8^11 = 0.086)
    s = np.linspace(1, 0, 60)
    c = np.ones(60, dtype=bool)
    c[30::2] = False  # errors at positions 30, 32, ...
    g = guaranteed_threshold(s, c, target_accuracy=0.8, delta=0.1, method="ltt")
    assert g.achievable
    k = np.arange(1, 61)
    e = np.cumsum(~c)
    p = stats.binom.cdf(e, k, 0.2)
    # testing starts at k = 11 and stops at the first p > delta
    first_fail = 10 + int(np.argmax(p[10:] > 0.1))
    assert g.n_selected == first_fail  # the last rejected k is first_fail (1-based count)
    assert g.threshold == s[first_fail - 1]
    assert g.n_tests == first_fail - 10 + 1


@pytest.mark.parametrize("method, starts", [("ltt", 1), ("ltt", 3), ("sgr", 1)])
def test_best_bound_is_the_smallest_risk_the_method_certifies(method, starts):
    rng = np.random.default_rng(2)
    n_checked = 0
    for _ in range(25):
        s, c = _random_case(rng)
        n = len(s)
        s = s + rng.random(n) * 1e-3  # continuous scores
        s, c = np.concatenate([s, s + 2]), np.concatenate([c, c])  # 2n samples
        kw = {"delta": 0.1, "method": method, "ltt_starts": starts}
        best = guaranteed_threshold(s, c, target_accuracy=0.5, **kw).best_bound
        if best >= 1.0:
            continue
        n_checked += 1
        ok = guaranteed_threshold(s, c, target_accuracy=1 - (best + 1e-9), **kw)
        assert ok.achievable and ok.bound <= best + 1e-9 + 1e-12
        for r in np.linspace(0.001, best - 1e-6, 15):
            assert not guaranteed_threshold(s, c, target_accuracy=1 - r, **kw).achievable
    assert n_checked >= 10


@pytest.mark.parametrize("method, starts", [("ltt", 1), ("ltt", 3), ("sgr", 1)])
def test_unreachable_target_says_so_with_the_best_bound(method, starts):
    rng = np.random.default_rng(3)
    s = np.sort(rng.random(500))[::-1]
    c = rng.random(500) < 0.8  # 20 % errors at every score...
    c[:30] = True  # ...below a clean top
    g = guaranteed_threshold(s, c, target_accuracy=0.95, method=method, ltt_starts=starts)
    assert not g.achievable
    assert g.threshold is None and g.bound is None and g.coverage == 0.0 and (g.n_selected, g.errors) == (0, 0)
    assert 0.05 < g.best_bound < 1.0 and g.best_guaranteed_accuracy == 1 - g.best_bound
    assert not guaranteed_threshold(s, c, target_accuracy=1.0, method=method, ltt_starts=starts).achievable
    d = g.as_dict()
    assert d["method"] == method and d["n_cal"] == 500 and d["target_accuracy"] == 0.95


def test_one_wrong_top_sample_blocks_single_start_ltt_but_not_the_fallback():
    """With one start, the sequence begins at the k_min most confident samples, and a single error there makes
    the first p-value exceed delta for every target; splitting delta over later starts avoids that."""
    rng = np.random.default_rng(5)
    s = rng.random(2000)
    c = rng.random(2000) < 0.99
    c[np.argmax(s)] = False
    one = guaranteed_threshold(s, c, target_accuracy=0.95, method="ltt")
    assert not one.achievable and one.best_bound == 1.0
    three = guaranteed_threshold(s, c, target_accuracy=0.95, method="ltt", ltt_starts=3)
    assert three.achievable and three.coverage > 0.5 and three.per_test_delta >= 0.1 / 3
    assert guaranteed_threshold(s, c, target_accuracy=0.95, method="sgr").achievable


def test_selective_outcome_matches_a_direct_count():
    rng = np.random.default_rng(4)
    s = np.round(rng.random(300), 2)
    c = rng.random(300) < 0.7
    for t in (0.0, 0.35, 0.5, 0.99, float(s.max())):
        out = selective_outcome(s, c, t)
        kept = [ci for si, ci in zip(s, c) if si >= t]
        assert out.n_kept == len(kept) and out.coverage == len(kept) / 300
        assert out.accuracy == pytest.approx(sum(kept) / len(kept))
        assert out.errors == len(kept) - sum(kept)
    assert selective_outcome(s, c, 2.0).accuracy is None
    none = selective_outcome(s, c, None)
    assert (none.n_kept, none.coverage, none.accuracy) == (0, 0.0, None)


def test_bad_arguments_raise_clear_errors():
    s, c = np.array([0.1, 0.9]), np.array([True, False])
    with pytest.raises(ClipauditError, match="ltt"):
        guaranteed_threshold(s, c, target_accuracy=0.9, method="lt")
    with pytest.raises(ClipauditError, match="delta"):
        guaranteed_threshold(s, c, target_accuracy=0.9, delta=0.0)
    with pytest.raises(ClipauditError, match="target_accuracy"):
        guaranteed_threshold(s, c, target_accuracy=1.5)
    with pytest.raises(ClipauditError, match="ltt_starts"):
        guaranteed_threshold(s, c, target_accuracy=0.9, ltt_starts=0)
    with pytest.raises(ClipauditError, match="same length"):
        guaranteed_threshold(s, c[:1], target_accuracy=0.9)


# ---------------------------------------------------------------- the guarantee, statistically
# Scores s ~ U(0, 1), P(correct | s) = 0.6 + 0.4 s, so the population selective accuracy of "s >= t" is
# A(t) = 0.8 + 0.2 t (exactly, also for scores rounded down to 2 decimals when t is on that grid).
N_DRAWS, N_CAL, TARGET, DELTA = 500, 1000, 0.9, 0.1
SLACK = 3 * math.sqrt(DELTA * (1 - DELTA) / N_DRAWS)


def _draw(rng, rounded):
    s = rng.random((N_DRAWS, N_CAL))
    c = rng.random((N_DRAWS, N_CAL)) < 0.6 + 0.4 * s
    return (np.floor(s * 100) / 100 if rounded else s), c


def _population_accuracy(t):
    return 0.8 + 0.2 * t


@pytest.mark.parametrize("method, starts, rounded", [("ltt", 1, False), ("ltt", 1, True), ("ltt", 3, False),
                                                     ("sgr", 1, False), ("sgr", 1, True)])
def test_guarantee_holds_over_calibration_draws(method, starts, rounded):
    """Ties (scores rounded to 2 decimals) go through the same grouping code for every method."""
    s, c = _draw(np.random.default_rng(10 + rounded), rounded)
    thresholds, coverage = [], []
    for i in range(N_DRAWS):
        g = guaranteed_threshold(s[i], c[i], target_accuracy=TARGET, delta=DELTA, method=method, ltt_starts=starts)
        thresholds.append(g.threshold if g.achievable else np.inf)
        coverage.append(g.coverage)
    t = np.array(thresholds)
    violated = np.isfinite(t) & (_population_accuracy(np.where(np.isfinite(t), t, 1.0)) < TARGET - 1e-12)
    assert violated.mean() <= DELTA + SLACK, violated.mean()
    # not vacuous: the best possible coverage is 0.5 (t = 0.5)
    assert np.isfinite(t).mean() >= 0.8
    assert np.mean(coverage) >= 0.2


def test_the_guarantee_test_can_fail():
    """The plain empirical rule (lowest t with calibration accuracy >= target) violates about half the time."""
    s, c = _draw(np.random.default_rng(12), False)
    order = np.argsort(-s, axis=1)
    ss = np.take_along_axis(s, order, 1)
    acc = np.cumsum(np.take_along_axis(c, order, 1), axis=1) / np.arange(1, N_CAL + 1)
    last = N_CAL - 1 - np.argmax((acc >= TARGET)[:, ::-1], axis=1)
    t = ss[np.arange(N_DRAWS), last]
    assert (_population_accuracy(t) < TARGET).mean() > DELTA + SLACK
