"""Temperature scaling and calibration metrics of class probabilities (numpy/scipy).

Two kinds of classifier output are handled, named by ``kind``:

``"softmax"`` (CLIP, InfoNCE models)
    ``p = softmax(z / T)`` over the classes; rows sum to 1. The NLL is ``-log p_y`` (cross-entropy).
``"sigmoid"`` (SigLIP)
    ``p_c = sigmoid(z_c / T)`` independently per class (one-vs-rest, the SigLIP training loss); rows do
    **not** sum to 1 and are not a softmax. The NLL is the binary cross-entropy summed over the classes
    (target 1 for the true class, 0 for the others) and averaged over samples. ``z`` includes the model's
    bias (``t * cos + b``); dividing by ``T`` scales the bias too.

Temperature scaling (Guo et al. [1]_) fits one ``T > 0`` minimising the mean NLL of ``z / T`` on
calibration data; it does not change the argmax, so accuracy is unchanged. Both NLLs are convex in
``1 / T``, hence unimodal in ``log T``, which :func:`scipy.optimize.minimize_scalar` (bounded Brent)
searches.

Metric conventions (:func:`calibration_metrics`)
-----------------------------------------------
- **ECE**: top-label, L1, ``n_bins`` equal-width bins on the max probability, as
  :func:`torchmetrics.functional.classification.multiclass_calibration_error` with ``norm="l1"``: bin ``b``
  is ``[b / n_bins, (b + 1) / n_bins)``, and a confidence of exactly 1.0 falls into a bin of its own;
  ``ECE = sum_b (n_b / n) |accuracy_b - mean confidence_b|``. The prediction is the argmax (first index
  among ties).
- **NLL**: natural log, mean over samples; probabilities are clipped to ``[eps, 1 - eps]`` with ``eps``
  the float64 machine epsilon (as :func:`sklearn.metrics.log_loss`), so a probability of 0 costs about
  36 nats instead of infinity.
- **Brier**: ``mean_i sum_c (p_ic - 1{c = y_i})^2``, in [0, 2] for a softmax: the original multiclass
  definition of Brier (1950), equal to :func:`sklearn.metrics.brier_score_loss` on multiclass
  probabilities (not halved). The same formula is used for sigmoid outputs.

References
----------
.. [1] C. Guo, G. Pleiss, Y. Sun, K. Q. Weinberger. "On Calibration of Modern Neural Networks." ICML 2017.
.. [2] G. W. Brier. "Verification of forecasts expressed in terms of probability." Monthly Weather
   Review 78(1), 1950.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import optimize, special

from ._checks import ClipauditError, check_choice, check_positive_int

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["KINDS", "probabilities", "nll", "fit_temperature", "calibration_metrics"]

#: How logits become class probabilities (see the module docstring).
KINDS: tuple[str, ...] = ("softmax", "sigmoid")

_EPS = float(np.finfo(np.float64).eps)


def _as_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as a float64 (n_samples >= 1, n_classes >= 2) array, or one error naming it."""
    z = np.asarray(x)
    if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] < 2:
        raise ClipauditError(f"{name} must be a 2-D array (n_samples >= 1, n_classes >= 2); got shape {z.shape}.")
    if not np.issubdtype(z.dtype, np.number):
        raise ClipauditError(f"{name} must be numeric, got dtype {z.dtype}.")
    return z.astype(np.float64)


def _check_logits(logits: Any, labels: Any, name: str = "logits") -> tuple[np.ndarray, np.ndarray]:
    z = _as_matrix(logits, name)
    if not np.all(np.isfinite(z)):
        raise ClipauditError(f"{name} must be finite; {int((~np.isfinite(z)).sum())} entries are NaN or infinite.")
    return z, _check_labels(labels, z.shape)


def _check_labels(labels: Any, shape: tuple[int, ...]) -> np.ndarray:
    y = np.asarray(labels)
    if y.shape != (shape[0],):
        raise ClipauditError(f"labels must have shape ({shape[0]},) to match {shape}; got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)):
            raise ClipauditError(f"labels must be class indices (integers), got dtype {y.dtype}.")
        y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= shape[1]):
        raise ClipauditError(f"labels must lie in [0, {shape[1] - 1}] (class indices); got range "
                             f"[{y.min()}, {y.max()}]. Unlabelled images (label -1) cannot be used for calibration.")
    return y.astype(np.int64)


def probabilities(logits: Any, temperature: float = 1.0, *, kind: str = "softmax") -> np.ndarray:
    """Class probabilities of ``logits / temperature``.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
    temperature : float > 0, default=1.0
    kind : {"softmax", "sigmoid"}, default="softmax"
        ``"softmax"``: rows sum to 1. ``"sigmoid"``: each class independently (SigLIP); rows do not sum to 1.

    Returns
    -------
    ndarray of float64, shape (n_samples, n_classes)
    """
    check_choice("kind", kind, KINDS)
    t = _check_temperature(temperature)
    z = np.asarray(logits, dtype=np.float64) / t
    return special.softmax(z, axis=1) if kind == "softmax" else special.expit(z)


def _check_temperature(temperature: Any) -> float:
    try:
        t = float(temperature)
    except (TypeError, ValueError):
        raise ClipauditError(f"temperature must be a positive number, got {temperature!r}.") from None
    if not (t > 0 and math.isfinite(t)):
        raise ClipauditError(f"temperature must be a positive finite number, got {temperature!r}.")
    return t


def _nll(z: np.ndarray, y: np.ndarray, beta: float, kind: str) -> float:
    """Mean NLL of ``beta * z`` (``beta = 1 / T``); validated float64 inputs."""
    rows = np.arange(len(y))
    zz = beta * z
    if kind == "softmax":
        return float(np.mean(special.logsumexp(zz, axis=1) - zz[rows, y]))
    # -log sigmoid(-x) for the negatives, and -log sigmoid(x) = -log sigmoid(-x) - x for the true class
    neg = -special.log_expit(-zz)
    return float((neg.sum() - zz[rows, y].sum()) / len(y))


def nll(logits: Any, labels: Any, temperature: float = 1.0, *, kind: str = "softmax") -> float:
    """Mean negative log-likelihood of ``logits / temperature`` (computed from logits, no clipping).

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
    labels : array-like of int, shape (n_samples,)
        True class indices in ``[0, n_classes)``.
    temperature : float > 0, default=1.0
    kind : {"softmax", "sigmoid"}, default="softmax"
        Softmax cross-entropy, or the one-vs-rest binary cross-entropy summed over classes.

    Returns
    -------
    float
        The loss :func:`fit_temperature` minimises.
    """
    check_choice("kind", kind, KINDS)
    z, y = _check_logits(logits, labels)
    return _nll(z, y, 1.0 / _check_temperature(temperature), kind)


def fit_temperature(
    logits: Any,
    labels: Any,
    *,
    kind: str = "softmax",
    bounds: tuple[float, float] = (1e-2, 1e2),
    xatol: float = 1e-6,
) -> float:
    """Temperature ``T`` minimising the mean NLL of ``logits / T`` (temperature scaling, Guo et al. 2017).

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
        Calibration logits, as the model outputs them (e.g. ``logit_scale * cos``, or ``t * cos + b``
        for SigLIP with ``kind="sigmoid"``).
    labels : array-like of int, shape (n_samples,)
        True class indices.
    kind : {"softmax", "sigmoid"}, default="softmax"
        ``"softmax"``: cross-entropy of ``softmax(z / T)``. ``"sigmoid"``: binary cross-entropy of
        ``sigmoid(z / T)`` one-vs-rest, summed over classes (the SigLIP loss; the bias is divided by T too).
    bounds : (float, float), default=(0.01, 100)
        Search interval for ``T``; the search runs on ``log T`` (bounded Brent,
        :func:`scipy.optimize.minimize_scalar`). If the optimum lies outside, the nearest bound is returned
        (e.g. perfectly separated training data drive ``T`` to 0).
    xatol : float, default=1e-6
        Absolute tolerance on ``log T``.

    Returns
    -------
    float
        The fitted temperature; ``probabilities(logits, T, kind=kind)`` are the calibrated probabilities.
    """
    check_choice("kind", kind, KINDS)
    z, y = _check_logits(logits, labels)
    lo, hi = (_check_temperature(b) for b in bounds)
    if not lo < hi:
        raise ClipauditError(f"bounds must be (low, high) with 0 < low < high, got {bounds!r}.")
    res = optimize.minimize_scalar(lambda log_t: _nll(z, y, math.exp(-log_t), kind), bounds=(math.log(lo),
                                   math.log(hi)), method="bounded", options={"xatol": xatol})
    t = math.exp(float(res.x))
    # Brent never evaluates the end points; return a bound when it is better (optimum outside the interval)
    return min((t, lo, hi), key=lambda v: _nll(z, y, 1.0 / v, kind))


def calibration_metrics(probs: Any, labels: Any, n_bins: int = 15, *, kind: str = "softmax") -> dict[str, Any]:
    """ECE, NLL and Brier score of class probabilities, and the per-bin table of a reliability diagram.

    Parameters
    ----------
    probs : array-like of shape (n_samples, n_classes)
        Probabilities in [0, 1]: a softmax (rows sum to 1, checked to 1e-4) or per-class sigmoids
        (``kind="sigmoid"``).
    labels : array-like of int, shape (n_samples,)
        True class indices.
    n_bins : int, default=15
        Equal-width confidence bins on [0, 1] (see the module docstring for the convention).
    kind : {"softmax", "sigmoid"}, default="softmax"
        Selects the NLL (cross-entropy or one-vs-rest binary cross-entropy) and the row-sum check.

    Returns
    -------
    dict
        ``n`` (int), ``n_bins`` (int), ``kind`` (str), ``accuracy`` (top-1, float), ``ece``, ``nll``,
        ``brier`` (floats), and ``bins``: a DataFrame with one row per **non-empty** bin (empty bins have no
        mean confidence or accuracy and are left out; a 1.0-confidence bin appears only when used), columns
        ``bin_low``, ``bin_high`` (the bin is ``[bin_low, bin_high)``, or ``[1, 1]``), ``count``,
        ``fraction`` (count / n), ``mean_confidence``, ``accuracy``, ``gap`` (accuracy - mean confidence).
        The counts add up to ``n``; ``ece == sum(fraction * |gap|)``.
    """
    import pandas as pd

    check_choice("kind", kind, KINDS)
    check_positive_int("n_bins", n_bins)
    p = _as_matrix(probs, "probs")
    if not np.all(np.isfinite(p)) or p.min() < 0 or p.max() > 1:
        raise ClipauditError("probs must be finite probabilities in [0, 1]; pass probabilities, not logits "
                             "(see analysis.calibration.probabilities).")
    if kind == "softmax":
        worst = float(np.abs(p.sum(axis=1) - 1.0).max())
        if worst > 1e-4:
            raise ClipauditError(f"probs rows must sum to 1 for kind='softmax' (largest deviation {worst:.3g}); "
                                 "per-class sigmoid probabilities (SigLIP) need kind='sigmoid'.")
    y = _check_labels(labels, p.shape)
    n = len(y)
    rows = np.arange(n)

    pred = p.argmax(axis=1)
    conf = p[rows, pred]
    correct = pred == y

    edges = np.arange(n_bins + 1, dtype=np.float64) / n_bins
    idx = np.searchsorted(edges, conf, side="right") - 1  # [edges[b], edges[b + 1]); 1.0 -> n_bins
    count = np.bincount(idx, minlength=n_bins + 1)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins + 1)
    acc_sum = np.bincount(idx, weights=correct.astype(np.float64), minlength=n_bins + 1)
    used = count > 0
    mean_conf = conf_sum[used] / count[used]
    acc = acc_sum[used] / count[used]
    frac = count[used] / n
    ece = float(np.sum(frac * np.abs(acc - mean_conf)))
    low = np.append(edges[:-1], 1.0)[used]
    high = np.append(edges[1:], 1.0)[used]
    bins: pd.DataFrame = pd.DataFrame({"bin_low": low, "bin_high": high, "count": count[used].astype(np.int64),
                                       "fraction": frac, "mean_confidence": mean_conf, "accuracy": acc,
                                       "gap": acc - mean_conf})

    pc = np.clip(p, _EPS, 1.0 - _EPS)
    if kind == "softmax":
        nll_value = float(-np.mean(np.log(pc[rows, y])))
    else:
        logs = np.log1p(-pc)
        logs[rows, y] = np.log(pc[rows, y])
        nll_value = float(-logs.sum() / n)
    brier = float(np.mean(np.sum(p * p, axis=1) - 2.0 * p[rows, y] + 1.0))
    return {"n": n, "n_bins": n_bins, "kind": kind, "accuracy": float(correct.mean()), "ece": ece,
            "nll": nll_value, "brier": brier, "bins": bins}
