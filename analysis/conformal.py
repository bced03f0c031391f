"""Split-conformal prediction sets with APS and RAPS scores (numpy).

Split conformal (Vovk et al.; Lei et al. 2018): a score ``E(x, y)`` for every calibration pair, the
quantile ``qhat`` = the ``ceil((n + 1)(1 - alpha))``-th smallest calibration score
(:func:`conformal_quantile`), and the set ``C(x) = {y : E(x, y) <= qhat}`` (:func:`prediction_sets`). For
exchangeable calibration and test data, ``P(Y in C(X)) >= 1 - alpha`` marginally, and ``<= 1 - alpha +
1 / (n + 1)`` when the scores have no ties (the randomised scores below, with empty sets allowed).

Scores. Sort the class probabilities of ``x`` in decreasing order (ties: lower class index first); for
class ``y`` at rank ``o(y)`` (1 = most probable) let ``rho(y)`` be the total probability of the classes
ranked above it and ``u ~ U(0, 1)`` one uniform draw per sample.

- **APS** (Romano, Sesia, Candes [1]_): ``E = rho(y) + u * p_y``.
- **RAPS** (Angelopoulos, Bates, Malik, Jordan [2]_): ``E = rho(y) + u * p_y + lam * max(0, o(y) - k_reg)``;
  the penalty on classes beyond rank ``k_reg`` gives smaller, more stable sets. ``lam`` and ``k_reg`` are
  fixed here (defaults 0.01 and 5); [2]_ also describes choosing them on a separate split.
- ``randomized=False`` uses ``u = 1`` (the cumulative probability up to and including ``y``).

The same ``u`` is used for every class of a sample, so the score increases with the rank and every set
is a prefix of the ranking (the top-1 class, then the next...). Sets may be empty when ``randomized=True``
(needed for the upper bound on coverage); with ``randomized=False`` the top-1 class is always included
(``allow_empty`` overrides both defaults; adding the top-1 class can only raise coverage).

The calibration scores and the sets are computed by one function, so ``y in C(x)`` holds exactly when
``E(x, y) <= qhat`` for the same ``u``.

References
----------
.. [1] Y. Romano, M. Sesia, E. J. Candes. "Classification with Valid and Adaptive Coverage." NeurIPS 2020.
.. [2] A. N. Angelopoulos, S. Bates, J. Malik, M. I. Jordan. "Uncertainty Sets for Image Classifiers
   using Conformal Prediction." ICLR 2021.
.. [3] J. Lei, M. G'Sell, A. Rinaldo, R. J. Tibshirani, L. Wasserman. "Distribution-Free Predictive
   Inference for Regression." JASA 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ._checks import ClipauditError, check_choice

__all__ = ["METHODS", "ConformalQuantile", "all_scores", "conformal_scores", "conformal_quantile",
           "prediction_sets", "set_metrics"]

#: Conformal scores.
METHODS: tuple[str, ...] = ("aps", "raps")

RngLike = int | np.random.Generator | None


class ConformalQuantile(NamedTuple):
    """``qhat`` and whether it is finite (unpacks as ``qhat, finite = conformal_quantile(...)``)."""

    qhat: float
    finite: bool


def _check_probs(probs: Any) -> np.ndarray:
    p = np.asarray(probs)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ClipauditError(f"probs must be a 2-D array (n_samples, n_classes >= 2); got shape {p.shape}.")
    if not np.issubdtype(p.dtype, np.number):
        raise ClipauditError(f"probs must be numeric, got dtype {p.dtype}.")
    p = p.astype(np.float64)
    if p.size and (not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1):
        raise ClipauditError("probs must be finite probabilities in [0, 1] (softmax outputs; normalise per-class "
                             "sigmoids first).")
    return p


def _check_labels(labels: Any, shape: tuple[int, ...], name: str = "labels") -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (shape[0],):
        raise ClipauditError(f"{name} must have shape ({shape[0]},) to match {shape}; got {y.shape}.")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
            raise ClipauditError(f"{name} must be class indices (integers), got dtype {y.dtype}.")
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= shape[1]):
        raise ClipauditError(f"{name} must lie in [0, {shape[1] - 1}]; got range [{y.min()}, {y.max()}]. "
                             "Unlabelled images (label -1) cannot be used here.")
    return y


def _check_params(method: str, lam: float, k_reg: int) -> tuple[float, int]:
    check_choice("method", method, METHODS)
    if method == "aps":
        return 0.0, 0
    try:
        lam_f = float(lam)
    except (TypeError, ValueError):
        raise ClipauditError(f"lam must be a number >= 0, got {lam!r}.") from None
    if not (lam_f >= 0 and math.isfinite(lam_f)):
        raise ClipauditError(f"lam must be a finite number >= 0, got {lam!r}.")
    if isinstance(k_reg, bool) or not isinstance(k_reg, (int, np.integer)) or k_reg < 0:
        raise ClipauditError(f"k_reg must be an integer >= 0, got {k_reg!r}.")
    return lam_f, int(k_reg)


def _uniforms(n: int, rng: RngLike, randomized: bool) -> np.ndarray:
    if not randomized:
        return np.ones(n)
    if not (rng is None or isinstance(rng, (int, np.integer, np.random.Generator))) or isinstance(rng, bool):
        raise ClipauditError(f"rng must be None, an integer seed or a numpy Generator, got {rng!r}.")
    return np.random.default_rng(rng).random(n)


def _scores_and_order(p: np.ndarray, u: np.ndarray, lam: float, k_reg: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, C) scores in class order, and the ranking (column ``j`` = class at rank ``j + 1``)."""
    order = np.argsort(-p, axis=1, kind="stable")
    sp = np.take_along_axis(p, order, axis=1)
    above = np.cumsum(sp, axis=1) - sp  # rho: probability of the classes ranked above
    s_sorted = above + u[:, None] * sp
    if lam > 0:
        rank = np.arange(1, p.shape[1] + 1, dtype=np.float64)
        s_sorted = s_sorted + lam * np.maximum(0.0, rank - k_reg)
    scores = np.empty_like(s_sorted)
    np.put_along_axis(scores, order, s_sorted, axis=1)
    return scores, order


def all_scores(
    probs: Any,
    *,
    method: str = "aps",
    lam: float = 0.01,
    k_reg: int = 5,
    rng: RngLike = None,
    randomized: bool = True,
) -> np.ndarray:
    """Conformal score of every (sample, class) pair.

    Parameters
    ----------
    probs : array-like of shape (n_samples, n_classes)
        Class probabilities (a softmax: the APS/RAPS scores assume rows sum to 1).
    method, lam, k_reg, rng, randomized
        As :func:`conformal_scores`.

    Returns
    -------
    ndarray of float64, shape (n_samples, n_classes)
        Column ``c`` is ``E(x, c)``; one uniform per sample is drawn from ``rng``.
    """
    p = _check_probs(probs)
    lam_f, k = _check_params(method, lam, k_reg)
    return _scores_and_order(p, _uniforms(len(p), rng, randomized), lam_f, k)[0]


def conformal_scores(
    probs: Any,
    labels: Any,
    *,
    method: str = "aps",
    lam: float = 0.01,
    k_reg: int = 5,
    rng: RngLike = None,
    randomized: bool = True,
) -> np.ndarray:
    """Conformal scores of the calibration pairs: APS (Romano et al. 2020) or RAPS (Angelopoulos et al. 2021).

    Parameters
    ----------
    probs : array-like of shape (n_cal, n_classes)
        Calibration probabilities (softmax; e.g. after temperature scaling).
    labels : array-like of int, shape (n_cal,)
        True class indices.
    method : {"aps", "raps"}, default="aps"
    lam : float >= 0, default=0.01
        RAPS penalty per rank beyond ``k_reg`` (ignored by APS).
    k_reg : int >= 0, default=5
        RAPS: ranks ``1..k_reg`` carry no penalty (ignored by APS).
    rng : None, int or numpy Generator
        Source of the uniforms ``u`` (one per sample, drawn in row order); an int seed makes them
        reproducible. None draws fresh randomness.
    randomized : bool, default=True
        False uses ``u = 1`` (no randomness; coverage may exceed ``1 - alpha + 1 / (n + 1)``).

    Returns
    -------
    ndarray of float64, shape (n_cal,)
        ``E(x_i, y_i)``; APS scores lie in [0, 1], RAPS adds the penalty.
    """
    p = _check_probs(probs)
    if len(p) == 0:
        raise ClipauditError("conformal_scores needs at least one calibration sample.")
    y = _check_labels(labels, p.shape)
    lam_f, k = _check_params(method, lam, k_reg)
    scores, _ = _scores_and_order(p, _uniforms(len(p), rng, randomized), lam_f, k)
    return scores[np.arange(len(y)), y]


def conformal_quantile(scores: Any, alpha: float) -> ConformalQuantile:
    """Split-conformal quantile: the ``ceil((n + 1)(1 - alpha))``-th smallest calibration score.

    Parameters
    ----------
    scores : array-like of shape (n_cal,)
        Calibration scores (:func:`conformal_scores`).
    alpha : float in (0, 1)
        Miscoverage level: sets contain the true class with probability >= ``1 - alpha``.

    Returns
    -------
    ConformalQuantile
        ``(qhat, finite)``. When ``ceil((n + 1)(1 - alpha)) > n`` (too few calibration samples for this
        alpha: ``n < 1 / alpha - 1``) ``qhat`` is ``inf`` and ``finite`` False: the only valid set is every
        class. Callers must not show ``inf``; say "n calibration images are too few for level 1 - alpha".
        ``(n + 1)(1 - alpha)`` is rounded up after subtracting 1e-9, so the float representation of alpha
        does not add a rank (alpha = 0.1, n = 9 gives the 9th smallest).
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or len(s) == 0:
        raise ClipauditError(f"scores must be a non-empty 1-D array, got shape {s.shape}.")
    if not np.all(np.isfinite(s)):
        raise ClipauditError("conformal scores must be finite.")
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise ClipauditError(f"alpha must be a number in (0, 1), got {alpha!r}.") from None
    if not 0 < a < 1:
        raise ClipauditError(f"alpha must be in (0, 1), got {alpha!r}.")
    n = len(s)
    k = max(1, math.ceil((n + 1) * (1 - a) - 1e-9))
    if k > n:
        return ConformalQuantile(math.inf, False)
    return ConformalQuantile(float(np.partition(s, k - 1)[k - 1]), True)


def prediction_sets(
    probs: Any,
    qhat: float,
    *,
    method: str = "aps",
    lam: float = 0.01,
    k_reg: int = 5,
    rng: RngLike = None,
    randomized: bool = True,
    allow_empty: bool | None = None,
) -> np.ndarray:
    """Conformal prediction sets ``{c : E(x, c) <= qhat}``.

    Parameters
    ----------
    probs : array-like of shape (n_samples, n_classes)
        Test probabilities, computed as for calibration (same temperature).
    qhat : float
        :func:`conformal_quantile` of the calibration scores; ``inf`` gives every class.
    method, lam, k_reg, randomized
        Must be those of the calibration scores.
    rng : None, int or numpy Generator
        Uniforms for the test samples (one per row, in row order; an int seed is reproducible). Use a
        stream independent of the calibration one.
    allow_empty : bool, optional
        Default ``randomized``: randomised sets may be empty (exact coverage); deterministic sets always
        hold the top-1 class. True/False forces either.

    Returns
    -------
    ndarray of bool, shape (n_samples, n_classes)
        ``sets[i, c]``: class ``c`` is in the set of sample ``i``. Each row is a prefix of the ranking.
    """
    p = _check_probs(probs)
    lam_f, k = _check_params(method, lam, k_reg)
    q = float(qhat)
    if math.isnan(q):
        raise ClipauditError("qhat must be a number (inf for every class), got NaN.")
    scores, order = _scores_and_order(p, _uniforms(len(p), rng, randomized), lam_f, k)
    sets = scores <= q
    if not (randomized if allow_empty is None else allow_empty) and len(p):
        sets[np.arange(len(p)), order[:, 0]] = True
    return sets


def set_metrics(sets: Any, labels: Any, class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """Coverage and size of prediction sets on labelled (held-out) data.

    Parameters
    ----------
    sets : array-like of bool, shape (n_samples, n_classes)
        :func:`prediction_sets`.
    labels : array-like of int, shape (n_samples,)
        True class indices.
    class_names : sequence of str, optional
        Adds a ``class_name`` column to the per-class table.

    Returns
    -------
    dict
        ``n`` (int), ``coverage`` (fraction of samples whose set holds the true class), ``mean_size``,
        ``median_size`` (floats), ``empty_fraction``, ``singleton_fraction`` (floats), ``min_class_coverage``
        (lowest per-class coverage), ``size_histogram`` (DataFrame: ``size``, ``count``, ``fraction``, one row
        per size that occurs, ascending), ``per_class`` (DataFrame, one row per class present in ``labels``,
        by class index: ``class``, [``class_name``], ``n``, ``covered``, ``coverage``, ``mean_size``). No
        NaN anywhere: classes absent from ``labels`` are left out of the per-class table.
    """
    import pandas as pd

    m = np.asarray(sets)
    if m.ndim != 2 or m.shape[0] == 0:
        raise ClipauditError(f"sets must be a non-empty 2-D boolean array, got shape {m.shape}.")
    if m.dtype != bool:
        if not np.all(np.isin(m, (0, 1))):
            raise ClipauditError("sets must be boolean (or 0/1).")
        m = m.astype(bool)
    y = _check_labels(labels, m.shape)
    if class_names is not None and len(class_names) != m.shape[1]:
        raise ClipauditError(f"class_names has {len(class_names)} entries for {m.shape[1]} classes.")
    n = len(y)
    covered = m[np.arange(n), y]
    size = m.sum(axis=1)

    sizes, counts = np.unique(size, return_counts=True)
    hist = pd.DataFrame({"size": sizes.astype(np.int64), "count": counts.astype(np.int64), "fraction": counts / n})

    n_c = np.bincount(y, minlength=m.shape[1])
    cov_c = np.bincount(y, weights=covered.astype(np.float64), minlength=m.shape[1])
    size_c = np.bincount(y, weights=size.astype(np.float64), minlength=m.shape[1])
    present = np.flatnonzero(n_c)
    per_class = pd.DataFrame({"class": present.astype(np.int64)})
    if class_names is not None:
        per_class["class_name"] = [str(class_names[c]) for c in present]
    per_class["n"] = n_c[present].astype(np.int64)
    per_class["covered"] = np.rint(cov_c[present]).astype(np.int64)
    per_class["coverage"] = cov_c[present] / n_c[present]
    per_class["mean_size"] = size_c[present] / n_c[present]
    return {"n": n, "coverage": float(covered.mean()), "mean_size": float(size.mean()),
            "median_size": float(np.median(size)), "empty_fraction": float(np.mean(size == 0)),
            "singleton_fraction": float(np.mean(size == 1)), "min_class_coverage": float(per_class["coverage"].min()),
            "size_histogram": hist, "per_class": per_class}
