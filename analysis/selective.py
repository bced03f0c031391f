"""Selective prediction and calibration metrics for a confidence score (pure numpy).

Every function takes a 1-D confidence ``scores`` (higher = more confident) and a 1-D boolean
``correct`` saying whether *the prediction that the score is a confidence for* was right. Which
prediction that is (name-only, prompt ensemble...) is the caller's choice; the callers in
:mod:`analysis.confidence` record it next to every number.

Conventions
-----------
- **Correctness AUROC**: ``correct`` is the positive class and the score is the detector
  (:func:`sklearn.metrics.roc_auc_score`; tied scores count 1/2, the Mann-Whitney convention).
- **Risk-coverage curve**: samples are ranked by decreasing score. A tie group (equal scores) cannot
  be split by any threshold, so inside a tie group the curve is the *expected* risk over a random
  order of the group, i.e. the number of errors grows linearly through the group. This is
  deterministic, does not depend on the input order, and is what :func:`roc_auc_score` does for
  ties too. Point ``k`` (1..N) keeps the ``k`` highest-ranked samples: coverage ``k/N``, risk
  ``expected errors among them / k``.
- **AURC** is the mean of the risk over the N points (Geifman et al.). **E-AURC** subtracts the AURC of
  an oracle that ranks every correct sample first (computed exactly on the same points; its
  continuous approximation is ``r + (1 - r) ln(1 - r)`` for error rate ``r``).
- **Selective accuracy at coverage c** is ``1 - risk`` at point ``k = ceil(c N)``.
- **ECE** is :func:`torchmetrics.functional.classification.binary_calibration_error` of the score
  (taken as the predicted probability that the prediction is right) against ``correct``: 15
  equal-width bins on [0, 1], L1. For a softmax score and its own argmax this is the usual top-label
  ECE. torchmetrics' bins are ``[k/15, (k+1)/15)``; a confidence of exactly 1.0 falls into a bin of
  its own. Scores outside [0, 1] are refused (no sigmoid is applied behind the caller's back).

References
----------
.. [1] Y. Geifman, R. El-Yaniv. "Selective classification for deep neural networks." NeurIPS 2017.
.. [2] Y. Geifman, G. Uziel, R. El-Yaniv. "Bias-reduced uncertainty estimation for deep neural
   classifiers." ICLR 2019 (AURC, E-AURC).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ._checks import ClipauditError, check_fraction, check_positive_int

__all__ = [
    "DEFAULT_COVERAGES",
    "ThresholdRecommendation",
    "correctness_auroc",
    "risk_coverage_curve",
    "aurc",
    "oracle_aurc",
    "e_aurc",
    "selective_accuracy",
    "expected_calibration_error",
    "recommend_threshold",
]

#: Coverages reported by default (the paper's Fig. 3 abstains on 0-50 % of the images).
DEFAULT_COVERAGES: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(11))


def _check_inputs(
    scores: object, correct: object, *, scores_name: str = "scores", correct_name: str = "correct"
) -> tuple[np.ndarray, np.ndarray]:
    """Validate once at the public boundary: 1-D finite float scores, 1-D boolean correctness."""
    s = np.asarray(scores)
    c = np.asarray(correct)
    if s.ndim != 1 or c.ndim != 1:
        raise ClipauditError(
            f"{scores_name} and {correct_name} must be 1-D arrays; got shapes {s.shape} and {c.shape}."
        )
    if len(s) != len(c):
        raise ClipauditError(f"{scores_name} and {correct_name} must have the same length; got {len(s)} and {len(c)}.")
    if len(s) == 0:
        raise ClipauditError(f"{scores_name} is empty: at least one labelled sample is needed.")
    if not (np.issubdtype(s.dtype, np.number) or s.dtype == bool):
        raise ClipauditError(f"{scores_name} must be numeric, got dtype {s.dtype}.")
    s = s.astype(np.float64)
    if not np.all(np.isfinite(s)):
        raise ClipauditError(
            f"{scores_name} must be finite; {int((~np.isfinite(s)).sum())} entries are NaN or infinite."
        )
    if c.dtype != bool:
        if not np.all(np.isin(c, (0, 1))):
            raise ClipauditError(f"{correct_name} must be boolean (or 0/1), got values {np.unique(c)[:5].tolist()}.")
        c = c.astype(bool)
    return s, c


def correctness_auroc(scores: np.ndarray, correct: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` as a detector of correct predictions.

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Confidence, higher = more confident.
    correct : array-like of shape (n_samples,)
        True where the prediction the score belongs to is right (the positive class).

    Returns
    -------
    float
        :func:`sklearn.metrics.roc_auc_score`; NaN when all predictions are right or all are wrong
        (the AUROC is undefined then).
    """
    from sklearn.metrics import roc_auc_score

    s, c = _check_inputs(scores, correct)
    if c.all() or not c.any():
        return float("nan")
    return float(roc_auc_score(c, s))


def _tie_groups(s_sorted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position of a sorted array: first and last (inclusive) position of its tie group."""
    n = len(s_sorted)
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = s_sorted[1:] != s_sorted[:-1]
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n) - 1
    gid = np.cumsum(new) - 1
    return starts[gid], ends[gid]


def _rank(s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort by decreasing score (stable: input order among ties; the curve does not depend on it)."""
    order = np.argsort(-s, kind="stable")
    return s[order], c[order]


def risk_coverage_curve(scores: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Selective risk as a function of coverage (samples kept in decreasing order of score).

    Parameters
    ----------
    scores : array-like of shape (n_samples,)
        Confidence, higher = more confident.
    correct : array-like of shape (n_samples,)
        True where the prediction is right.

    Returns
    -------
    coverage : ndarray of shape (n_samples,)
        ``k / n`` for k = 1..n.
    risk : ndarray of shape (n_samples,)
        Error rate among the k most confident samples; expected value over a random order inside a
        group of tied scores (see the module docstring).
    thresholds : ndarray of shape (n_samples,)
        The score of the k-th ranked sample (non-increasing).
    """
    s, c = _check_inputs(scores, correct)
    s_sorted, c_sorted = _rank(s, c)
    n = len(s_sorted)
    start, end = _tie_groups(s_sorted)
    cum_err = np.concatenate([[0.0], np.cumsum(~c_sorted, dtype=np.float64)])
    err_before = cum_err[start]
    group_rate = (cum_err[end + 1] - err_before) / (end - start + 1)
    k = np.arange(1, n + 1, dtype=np.float64)
    expected_err = err_before + (k - start) * group_rate
    return k / n, expected_err / k, s_sorted


def aurc(scores: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve (mean risk over the n coverage points); lower is better."""
    return float(np.mean(risk_coverage_curve(scores, correct)[1]))


def oracle_aurc(correct: np.ndarray) -> float:
    """AURC of an oracle that ranks every correct sample before every wrong one."""
    c = np.asarray(correct)
    return aurc(c.astype(np.float64), c)


def e_aurc(scores: np.ndarray, correct: np.ndarray) -> float:
    """Excess AURC: :func:`aurc` minus :func:`oracle_aurc` (0 = perfect ranking); lower is better."""
    _, c = _check_inputs(scores, correct)
    return aurc(scores, c) - oracle_aurc(c)


def selective_accuracy(
    scores: np.ndarray, correct: np.ndarray, coverages: Sequence[float] = DEFAULT_COVERAGES
) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy on the most confident fraction ``c`` of the samples, for each coverage ``c``.

    Parameters
    ----------
    scores, correct : array-like of shape (n_samples,)
        Confidence and correctness.
    coverages : sequence of float in (0, 1], default=0.5, 0.55, ..., 1.0
        Fractions of samples kept. Abstaining on a fraction ``a`` is coverage ``1 - a``.

    Returns
    -------
    n_kept : ndarray of int, shape (n_coverages,)
        ``ceil(c * n)`` samples kept (at least 1).
    accuracy : ndarray of shape (n_coverages,)
        ``1 - risk`` at that point of :func:`risk_coverage_curve` (ties: expected value).
    """
    cov = [check_fraction("coverages", c) for c in coverages]
    _, risk, _ = risk_coverage_curve(scores, correct)
    n = len(risk)
    n_kept = np.array([max(1, math.ceil(c * n - 1e-9)) for c in cov], dtype=np.int64)
    return n_kept, 1.0 - risk[n_kept - 1]


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15, norm: str = "l1"
) -> float:
    """Calibration error of a confidence in [0, 1] read as P(prediction is right).

    Parameters
    ----------
    confidence : array-like of shape (n_samples,)
        Values in [0, 1] (e.g. the max softmax probability at a stated temperature, or S_T).
    correct : array-like of shape (n_samples,)
        True where the prediction is right.
    n_bins : int, default=15
        Equal-width bins on [0, 1].
    norm : {"l1", "l2", "max"}, default="l1"
        "l1" is the ECE, "max" the MCE.

    Returns
    -------
    float
        :func:`torchmetrics.functional.classification.binary_calibration_error`.

    Raises
    ------
    ClipauditError
        If a confidence lies outside [0, 1].
    """
    import torch
    from torchmetrics.functional.classification import binary_calibration_error

    from ._checks import check_choice

    s, c = _check_inputs(confidence, correct, scores_name="confidence")
    check_positive_int("n_bins", n_bins)
    check_choice("norm", norm, ("l1", "l2", "max"))
    if s.min() < 0 or s.max() > 1:
        raise ClipauditError(
            f"confidence must lie in [0, 1] for a calibration error; got range "
            f"[{s.min():.4g}, {s.max():.4g}]. Use a probability (e.g. a softmax at a stated "
            "scale), not a raw logit."
        )
    value = binary_calibration_error(
        torch.from_numpy(s), torch.from_numpy(c.astype(np.int64)), n_bins=n_bins, norm=norm
    )
    return float(value)


@dataclass(frozen=True)
class ThresholdRecommendation:
    """Confidence threshold keeping the most samples whose selective accuracy reaches a target.

    Keep a sample when ``score >= threshold``. ``threshold`` is ``inf`` (keep nothing), ``coverage``
    0 and ``accuracy`` NaN when no threshold reaches the target. CIs are bootstrap percentile
    intervals: ``threshold_ci`` re-selects the threshold on every resample (how stable the choice
    is); ``coverage_ci`` and ``accuracy_ci`` keep the chosen threshold fixed (what this threshold
    gives on data like these). Resamples where a value is undefined are left out;
    ``achievable_rate`` is the share of resamples in which the target was reachable.
    """

    target_accuracy: float
    achievable: bool
    threshold: float
    coverage: float
    n_kept: int
    accuracy: float
    threshold_ci_low: float
    threshold_ci_high: float
    coverage_ci_low: float
    coverage_ci_high: float
    accuracy_ci_low: float
    accuracy_ci_high: float
    achievable_rate: float
    confidence_level: float
    n_boot: int
    seed: int

    def as_dict(self) -> dict[str, float | int | bool]:
        return asdict(self)


def _select_thresholds(
    weights: np.ndarray, s_sorted: np.ndarray, c_sorted: np.ndarray, start: np.ndarray, end: np.ndarray, target: float
) -> np.ndarray:
    """Largest-coverage threshold with selective accuracy >= target, for each row of sample weights.

    ``weights`` (B, n) are per-sample multiplicities in decreasing-score order (all ones for the data
    themselves, bootstrap counts for a resample), so a resample needs no new sort. Only ends of tie
    groups present in the (re)sample are candidate cut points: a threshold keeps a whole tie group or
    none of it. Selective accuracy is not monotone in coverage, so every candidate is checked.
    Returns NaN where no threshold reaches the target.
    """
    n = s_sorted.shape[0]
    zeros = np.zeros((weights.shape[0], 1))
    cum_w = np.concatenate([zeros, np.cumsum(weights, axis=1)], axis=1)  # cum_w[:, k] = weight of first k
    cum_c = np.concatenate([zeros, np.cumsum(weights * c_sorted, axis=1)], axis=1)
    pos = np.arange(n)
    group_present = cum_w[:, end + 1] - cum_w[:, start] > 0
    kept_w, kept_c = cum_w[:, 1:], cum_c[:, 1:]
    ok = (pos == end) & group_present & (kept_c >= target * kept_w - 1e-9)
    last = n - 1 - np.argmax(ok[:, ::-1], axis=1)
    return np.where(ok.any(axis=1), s_sorted[last], np.nan)


def recommend_threshold(
    scores: np.ndarray,
    correct: np.ndarray,
    *,
    target_accuracy: float | None = None,
    max_risk: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence_level: float = 0.95,
) -> ThresholdRecommendation:
    """Deployment threshold for a target selective accuracy (or maximum risk), with bootstrap CIs.

    Parameters
    ----------
    scores, correct : array-like of shape (n_samples,)
        Confidence and correctness of the deployed prediction.
    target_accuracy : float in (0, 1], optional
        Required accuracy on the kept samples. Give this or ``max_risk``.
    max_risk : float in [0, 1), optional
        Maximum error rate on the kept samples (``target_accuracy = 1 - max_risk``).
    n_boot : int, default=1000
        Bootstrap resamples (:func:`scipy.stats.bootstrap`, paired, percentile method).
    seed : int, default=0
        Seed of the bootstrap generator; the same seed gives the same intervals.
    confidence_level : float, default=0.95
        Level of the intervals.

    Returns
    -------
    ThresholdRecommendation
    """
    from scipy.stats import bootstrap

    if (target_accuracy is None) == (max_risk is None):
        raise ClipauditError(
            "Give exactly one of target_accuracy and max_risk; got "
            f"target_accuracy={target_accuracy!r}, max_risk={max_risk!r}."
        )
    if max_risk is not None:
        target = 1.0 - check_fraction("max_risk", max_risk, closed_low=True)
        if target <= 0:
            raise ClipauditError(f"max_risk must be < 1, got {max_risk!r}.")
    else:
        target = check_fraction("target_accuracy", target_accuracy)
    check_positive_int("n_boot", n_boot)
    level = check_fraction("confidence_level", confidence_level)
    s, c = _check_inputs(scores, correct)
    n = len(s)

    order = np.argsort(-s, kind="stable")
    s_sorted, c_sorted = s[order], c[order]
    start, end = _tie_groups(s_sorted)
    thr = float(_select_thresholds(np.ones((1, n)), s_sorted, c_sorted, start, end, target)[0])
    achievable = not math.isnan(thr)
    if not achievable:
        thr = math.inf
    kept = s >= thr
    n_kept = int(kept.sum())
    accuracy = float(c[kept].mean()) if n_kept else float("nan")

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        # scipy resamples the sample indices; turn each resample into per-sample counts
        idx = np.atleast_2d(idx)
        b = idx.shape[0]
        counts = np.bincount((idx + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        nk = counts[:, kept].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.where(nk > 0, counts[:, kept & c].sum(axis=1) / np.maximum(nk, 1), np.nan)
        thr_b = _select_thresholds(counts[:, order].astype(np.float64), s_sorted, c_sorted, start, end, target)
        return np.stack([thr_b, nk / n, acc])

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns on undefined resamples; handled below
        res = bootstrap(
            (np.arange(n),),
            statistic,
            vectorized=True,
            n_resamples=n_boot,
            batch=max(1, min(n_boot, 2**22 // n)),
            method="percentile",
            confidence_level=level,
            rng=np.random.default_rng(seed),
        )
    dist = res.bootstrap_distribution
    alpha = (1 - level) / 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows give NaN intervals
        lo, hi = np.nanquantile(dist, [alpha, 1 - alpha], axis=-1)
    return ThresholdRecommendation(
        target_accuracy=target,
        achievable=achievable,
        threshold=thr,
        coverage=n_kept / n,
        n_kept=n_kept,
        accuracy=accuracy,
        threshold_ci_low=float(lo[0]),
        threshold_ci_high=float(hi[0]),
        coverage_ci_low=float(lo[1]),
        coverage_ci_high=float(hi[1]),
        accuracy_ci_low=float(lo[2]),
        accuracy_ci_high=float(hi[2]),
        achievable_rate=float(np.mean(~np.isnan(dist[0]))),
        confidence_level=level,
        n_boot=n_boot,
        seed=seed,
    )
