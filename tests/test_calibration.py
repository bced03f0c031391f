"""Temperature scaling and calibration metrics against brute force, direct loops, torchmetrics and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from analysis._checks import ClipauditError
from analysis.calibration import calibration_metrics, fit_temperature, nll, probabilities


def _overconfident(n, n_classes=10, true_t=3.0, seed=0):
    """Labels drawn from softmax(z); the model reports true_t * z (over-confident by a factor true_t)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, n_classes)) * 1.5
    p = softmax(z, axis=1)
    y = (rng.random((n, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    return true_t * z, y


def _direct_nll(z, y, t, kind):
    if kind == "softmax":
        return -np.mean(log_softmax(z / t, axis=1)[np.arange(len(y)), y])
    onehot = np.eye(z.shape[1])[y]
    # -log sigmoid(x) = log(1 + exp(-x)), -log(1 - sigmoid(x)) = log(1 + exp(x))
    return np.mean(np.sum(onehot * np.logaddexp(0, -z / t) + (1 - onehot) * np.logaddexp(0, z / t), axis=1))


@pytest.mark.parametrize("kind", ["softmax", "sigmoid"])
def test_fitted_temperature_beats_a_brute_force_grid(kind):
    z, y = _overconfident(600)
    if kind == "sigmoid":
        z = z - 4.0  # a SigLIP-like negative bias
    t = fit_temperature(z, y, kind=kind)
    grid = np.geomspace(0.05, 20, 1000)
    losses = np.array([_direct_nll(z, y, g, kind) for g in grid])
    best = grid[np.argmin(losses)]
    assert _direct_nll(z, y, t, kind) <= losses.min() + 1e-9
    assert abs(np.log(t) - np.log(best)) <= np.log(grid[1] / grid[0]) + 1e-9
    assert nll(z, y, t, kind=kind) == pytest.approx(_direct_nll(z, y, t, kind), rel=1e-10)


def test_temperature_recovers_the_over_confidence_factor():
    z, y = _overconfident(4000, true_t=3.0, seed=1)
    assert fit_temperature(z, y) == pytest.approx(3.0, rel=0.1)
    z, y = _overconfident(4000, true_t=0.5, seed=2)  # under-confident
    assert fit_temperature(z, y) == pytest.approx(0.5, rel=0.1)


def test_temperature_scaling_keeps_the_accuracy_and_lowers_nll():
    z, y = _overconfident(1000, seed=3)
    t = fit_temperature(z, y)
    before = calibration_metrics(probabilities(z, 1.0), y)
    after = calibration_metrics(probabilities(z, t), y)
    assert np.array_equal(probabilities(z, t).argmax(1), z.argmax(1))
    assert after["accuracy"] == before["accuracy"]
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"]


def test_separable_data_drive_the_temperature_to_its_bound():
    z = np.eye(4)[np.arange(40) % 4]
    y = np.arange(40) % 4
    # NLL(T) = log(1 + 3 exp(-1/T)) decreases towards T = 0
    assert fit_temperature(z, y, bounds=(0.5, 100)) == 0.5
    # always wrong: NLL(T) = log(3 + exp(-1/T)) + 1/T decreases with T; flatten as much as allowed
    assert fit_temperature(-z, y, bounds=(0.5, 100)) == 100.0


def _probs_with_edges(seed=0, n=1500, n_classes=7):
    rng = np.random.default_rng(seed)
    p = softmax(rng.normal(size=(n, n_classes)) * rng.uniform(0.2, 4, size=(n, 1)), axis=1)
    p[:20] = np.eye(n_classes)[rng.integers(0, n_classes, 20)]  # confidence exactly 1.0: a bin of its own
    y = np.where(rng.random(n) < p.max(1), p.argmax(1), rng.integers(0, n_classes, n))
    return p, y


@pytest.mark.parametrize("n_bins", [15, 10])
def test_ece_matches_torchmetrics(n_bins):
    """Same bins and formula; torchmetrics averages in float32, hence the 1e-6 tolerance."""
    torch = pytest.importorskip("torch")
    from torchmetrics.functional.classification import multiclass_calibration_error

    p, y = _probs_with_edges()
    p = p.astype(np.float32)  # torchmetrics casts the confidences to float32: bin the same values
    want = multiclass_calibration_error(torch.from_numpy(p), torch.from_numpy(y), num_classes=p.shape[1],
                                        n_bins=n_bins, norm="l1")
    assert calibration_metrics(p, y, n_bins=n_bins)["ece"] == pytest.approx(float(want), abs=1e-6)
    # per-class sigmoids (rows do not sum to 1): the same top-label binning
    q = (1 / (1 + np.exp(-np.random.default_rng(1).normal(size=(500, 6)) * 3))).astype(np.float32)
    yq = np.random.default_rng(2).integers(0, 6, 500)
    want = multiclass_calibration_error(torch.from_numpy(q), torch.from_numpy(yq), num_classes=6, n_bins=n_bins)
    assert calibration_metrics(q, yq, n_bins=n_bins, kind="sigmoid")["ece"] == pytest.approx(float(want), abs=1e-6)


def test_ece_and_bins_match_a_direct_loop():
    p, y = _probs_with_edges(seed=4)
    n, n_bins = len(y), 15
    m = calibration_metrics(p, y, n_bins=n_bins)
    rows = []
    for b in range(n_bins + 1):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = [i for i in range(n) if (lo <= p[i].max() < hi if b < n_bins else p[i].max() == 1.0)]
        if members:
            conf = np.mean([p[i].max() for i in members])
            acc = np.mean([p[i].argmax() == y[i] for i in members])
            rows.append((min(lo, 1.0), len(members), conf, acc))
    ece = sum(cnt / n * abs(acc - conf) for _, cnt, conf, acc in rows)
    assert m["ece"] == pytest.approx(ece, abs=1e-12)
    bins = m["bins"]
    assert bins["count"].tolist() == [r[1] for r in rows] and bins["count"].sum() == n
    np.testing.assert_allclose(bins["bin_low"], [r[0] for r in rows])
    np.testing.assert_allclose(bins["mean_confidence"], [r[2] for r in rows], atol=1e-12)
    np.testing.assert_allclose(bins["accuracy"], [r[3] for r in rows], atol=1e-12)
    assert bins.iloc[-1]["bin_low"] == bins.iloc[-1]["bin_high"] == 1.0  # the 1.0 bin is used here
    assert m["ece"] == pytest.approx(float((bins["fraction"] * bins["gap"].abs()).sum()), abs=1e-12)
    assert not bins.isna().any().any()


def test_brier_and_nll_match_direct_computations_and_sklearn():
    from sklearn.metrics import brier_score_loss, log_loss

    p, y = _probs_with_edges(seed=5)
    p = np.clip(p, 1e-6, None)
    p /= p.sum(1, keepdims=True)
    m = calibration_metrics(p, y)
    onehot = np.eye(p.shape[1])[y]
    assert m["brier"] == pytest.approx(np.mean(np.sum((p - onehot) ** 2, axis=1)), abs=1e-12)
    assert m["brier"] == pytest.approx(brier_score_loss(y, p, labels=np.arange(p.shape[1])), abs=1e-12)
    assert m["nll"] == pytest.approx(-np.mean(np.log(p[np.arange(len(y)), y])), abs=1e-12)
    assert m["nll"] == pytest.approx(log_loss(y, p, labels=np.arange(p.shape[1])), abs=1e-9)
    # sigmoid kind: one-vs-rest binary cross-entropy summed over classes, the loss fit_temperature minimises
    z, y = _overconfident(300, seed=6)
    q = probabilities(z, 2.0, kind="sigmoid")
    ms = calibration_metrics(q, y, kind="sigmoid")
    assert ms["nll"] == pytest.approx(_direct_nll(z, y, 2.0, "sigmoid"), rel=1e-9)
    assert ms["brier"] == pytest.approx(np.mean(np.sum((q - np.eye(10)[y]) ** 2, axis=1)), abs=1e-12)


def test_a_zero_probability_costs_a_finite_nll():
    p = np.array([[1.0, 0.0], [0.5, 0.5]])
    m = calibration_metrics(p, np.array([1, 0]))
    assert np.isfinite(m["nll"]) and m["nll"] == pytest.approx((-np.log(np.finfo(float).eps) + np.log(2)) / 2)


def test_bad_inputs_raise_clear_errors():
    z, y = _overconfident(20)
    with pytest.raises(ClipauditError, match="sigmoid"):
        calibration_metrics(probabilities(z, 1.0, kind="sigmoid"), y)
    with pytest.raises(ClipauditError, match="not logits"):
        calibration_metrics(z, y)
    with pytest.raises(ClipauditError, match="labels"):
        fit_temperature(z, np.full(20, -1))
    with pytest.raises(ClipauditError, match="finite"):
        fit_temperature(np.where(z > 0, np.nan, z), y)
    with pytest.raises(ClipauditError, match="softmax"):
        fit_temperature(z, y, kind="softmx")
    with pytest.raises(ClipauditError, match="temperature"):
        probabilities(z, 0.0)
