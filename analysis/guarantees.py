"""Selective classification with a guaranteed risk: a confidence threshold chosen on calibration data (numpy/scipy).

Predict when ``score >= t``, abstain otherwise. The selective risk ``R(t) = P(wrong | score >= t)`` of a
threshold chosen on n calibration samples is a random quantity; :func:`guaranteed_threshold` chooses ``t`` so
that ``P_cal(R(t) > r*) <= delta`` with ``r* = 1 - target_accuracy``, i.e. the accuracy on the answered images
is at least the target with probability at least ``1 - delta`` over the draw of the calibration data.

Why a bound works for one threshold: selection depends on the score only, so given the number ``k`` of
selected samples the number ``e`` of errors among them is Binomial(k, R(t)); the Clopper-Pearson upper bound
(:func:`clopper_pearson_upper`) holds with probability ``1 - delta`` for a fixed ``t``. Choosing among many
thresholds needs a multiple-testing correction; two are offered:

``"ltt"`` (default): Learn-then-Test with fixed-sequence testing [1]_.
    One null hypothesis ``H_t: R(t) > r*`` per candidate threshold, p-value ``binom.cdf(e, k, r*)``.
    Candidates are tested from the most conservative (highest ``t``) down; every hypothesis is rejected
    while ``p <= delta`` and testing stops at the first failure; the lowest rejected threshold (the largest
    coverage) is returned. Fixed-sequence testing controls the family-wise error at ``delta`` without
    splitting it. The sequence starts at the first threshold keeping ``k >= k_min`` samples, with
    ``k_min = min{k : (1 - r*)^k <= delta}`` (fewer samples cannot reject even with no error; starting
    there would always stop at once).

    Weakness: the first test sees only the ``k_min`` most confident samples (22 for r* = 0.1, 45 for
    r* = 0.05 at delta = 0.1); a single error among them stops the sequence at once, whatever the target
    (one wrong label on the most confident image makes every target unreachable). ``ltt_starts = m > 1``
    uses the *fallback procedure* [4]_ instead: ``delta / m`` is placed at ``m`` start points (the first
    threshold keeping ``k0 * (top / k0)^(i / (m - 1))`` samples, i = 0..m-1, with ``k0 = k_min`` at level
    ``delta / m`` and ``top = max(k0, n / 2)``), each hypothesis is tested at its share plus the level of
    the previous hypothesis if that one was rejected, and the lowest rejected threshold is returned. It
    controls the family-wise error at ``delta`` under any dependence (a Bonferroni-based graphical
    procedure); the start points depend on the scores only. ``ltt_starts = 1`` is exactly the fixed-sequence
    test above.
``"sgr"``: Selection with Guaranteed Risk (SGR), Geifman & El-Yaniv [2]_, Algorithm 1.
    Binary search over the sorted calibration scores in ``K = ceil(log2 n)`` steps, each with the
    Clopper-Pearson bound at level ``delta / K`` (Bonferroni); a step whose bound is ``<= r*`` moves to
    a lower threshold, a failing step to a higher one. The threshold of the last step whose bound is
    ``<= r*`` is returned (the paper outputs the last step; the last *passing* step is what it certifies).

Conventions
-----------
- Candidate thresholds are the distinct calibration scores; ties are never split: ``t`` keeps every sample
  with ``score >= t``. The grid and the LTT start points depend on the calibration scores, never on
  correctness (as in SGR, whose grid is the sorted calibration scores); the tests check the guarantee by
  simulation (violation rate over 500 calibration draws).
- ``errors`` and ``n_selected`` are the calibration counts at the chosen ``t``; ``bound`` is the
  Clopper-Pearson bound there at the level its test was run at (``per_test_delta``: ``delta`` for one-start
  LTT, ``delta / K`` for SGR), always ``<= r*`` when a threshold is returned.
- ``best_bound`` answers "what could be guaranteed?" when the target cannot be: the smallest ``r*`` for
  which the same method, on the same data and delta, returns a threshold (so ``1 - best_bound`` is the
  highest target accuracy it would accept). It is a float in [0, 1], never NaN (1.0: nothing can be
  guaranteed).

References
----------
.. [1] A. N. Angelopoulos, S. Bates, E. J. Candes, M. I. Jordan, L. Lei. "Learn then Test: Calibrating
   Predictive Algorithms to Achieve Risk Control." arXiv:2110.01052, 2021.
.. [2] Y. Geifman, R. El-Yaniv. "Selective Classification for Deep Neural Networks." NeurIPS 2017.
.. [3] C. J. Clopper, E. S. Pearson. "The use of confidence or fiducial limits illustrated in the case of
   the binomial." Biometrika 26(4), 1934.
.. [4] B. L. Wiens, A. Dmitrienko. "The fallback procedure for evaluating a single family of hypotheses."
   Journal of Biopharmaceutical Statistics 15(6), 2005.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import special, stats

from ._checks import ClipauditError, check_choice, check_fraction, check_positive_int
from .selective import _check_inputs

__all__ = [
    "METHODS",
    "GuaranteedThreshold",
    "SelectiveOutcome",
    "clopper_pearson_upper",
    "guaranteed_threshold",
    "selective_outcome",
]

#: Multiple-testing procedures of :func:`guaranteed_threshold`: name -> description in words.
METHODS: dict[str, str] = {
    "ltt": "Learn-then-Test fixed-sequence testing (Angelopoulos et al. 2021)",
    "sgr": "SGR binary search with a Bonferroni correction (Geifman & El-Yaniv 2017)",
}


def _check_delta(delta: Any) -> float:
    d = check_fraction("delta", delta)
    if d >= 1:
        raise ClipauditError(f"delta must be in (0, 1), got {delta!r}.")
    return d


def clopper_pearson_upper(errors: Any, n: Any, delta: float) -> float | np.ndarray:
    """One-sided Clopper-Pearson upper confidence bound on a binomial error rate.

    Parameters
    ----------
    errors : int or array-like of int
        Errors observed, ``0 <= errors <= n``.
    n : int or array-like of int
        Trials (selected samples); broadcast against ``errors``.
    delta : float in (0, 1)
        ``P(rate > bound) <= delta`` for every true rate.

    Returns
    -------
    float or ndarray of float64
        ``scipy.stats.beta.ppf(1 - delta, errors + 1, n - errors)``; 1.0 where ``errors == n`` (this covers
        ``n == 0``). A float for scalar inputs, else an array of the broadcast shape. Equivalently the
        rate ``b`` solving ``binom.cdf(errors, n, b) = delta`` (the binomial tail inversion used by SGR).
    """
    d = _check_delta(delta)
    e = np.asarray(errors)
    k = np.asarray(n)
    for name, a in (("errors", e), ("n", k)):
        if a.size and not (np.issubdtype(a.dtype, np.integer) or np.all(np.mod(a, 1) == 0)):
            raise ClipauditError(f"{name} must be whole numbers, got {a.ravel()[:5].tolist()}.")
    e, k = np.broadcast_arrays(e.astype(np.float64), k.astype(np.float64))
    if np.any(e < 0) or np.any(e > k):
        raise ClipauditError("clopper_pearson_upper needs 0 <= errors <= n for every entry.")
    full = e >= k
    with np.errstate(invalid="ignore", divide="ignore"):
        # special.betaincinv(a, b, q) is stats.beta.ppf(q, a, b) without the per-call overhead
        out = np.where(full, 1.0, special.betaincinv(e + 1.0, np.where(full, 1.0, k - e), 1.0 - d))
    return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class GuaranteedThreshold:
    """A threshold chosen by :func:`guaranteed_threshold` and what it does on the calibration data.

    Attributes
    ----------
    method : {"ltt", "sgr"}
    method_name : str
        The method in words (``METHODS[method]``).
    target_accuracy : float
        Required selective accuracy; ``max_risk = 1 - target_accuracy``.
    max_risk : float
    delta : float
        Allowed probability that the guarantee fails over the draw of the calibration data.
    per_test_delta : float
        Level of the test at the chosen threshold, at which ``bound`` is computed: ``delta`` (LTT, one start),
        between ``delta / ltt_starts`` and ``delta`` (LTT fallback: shares passed on along the sequence), or
        ``delta / ceil(log2 n)`` (SGR). When not achievable: ``delta / ltt_starts`` or ``delta / ceil(log2 n)``.
    ltt_starts : int or None
        Start points of the LTT sequence (1 = plain fixed-sequence testing); None for SGR.
    n_cal : int
        Calibration samples.
    n_tests : int
        Hypotheses tested (LTT: every threshold tested, rejected or not; SGR: ``ceil(log2 n)`` steps).
    achievable : bool
        A threshold with the guarantee exists on these data.
    threshold : float or None
        Keep a sample when ``score >= threshold``; None when not achievable.
    coverage : float
        Fraction of calibration samples kept (0.0 when not achievable).
    n_selected, errors : int
        Calibration samples kept and errors among them (0 and 0 when not achievable).
    bound : float or None
        Clopper-Pearson upper bound on the risk at ``threshold`` (level ``per_test_delta``); ``<= max_risk``.
        None when not achievable.
    best_bound : float
        Smallest ``max_risk`` the method certifies on these data (see the module docstring); 1.0 if none.
        For LTT it is exact up to 1e-12 (the end points of the set of certifiable risks are tried in
        increasing order); for SGR it is the smallest bound on the path the search takes when every step fails.
    """

    method: str
    method_name: str
    target_accuracy: float
    max_risk: float
    delta: float
    per_test_delta: float
    ltt_starts: int | None
    n_cal: int
    n_tests: int
    achievable: bool
    threshold: float | None
    coverage: float
    n_selected: int
    errors: int
    bound: float | None
    best_bound: float

    @property
    def guaranteed_accuracy(self) -> float | None:
        """``1 - bound``: accuracy guaranteed at the chosen threshold (None when not achievable)."""
        return None if self.bound is None else 1.0 - self.bound

    @property
    def best_guaranteed_accuracy(self) -> float:
        """``1 - best_bound``: the highest target accuracy the method would accept on these data."""
        return 1.0 - self.best_bound

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SelectiveOutcome:
    """What a fixed threshold does on (held-out) data.

    Attributes
    ----------
    threshold : float or None
        None keeps nothing.
    n : int
        Samples.
    n_kept : int
        Samples with ``score >= threshold``.
    coverage : float
        ``n_kept / n``.
    errors : int
        Errors among the kept samples.
    accuracy : float or None
        Accuracy on the kept samples; None when nothing is kept.
    """

    threshold: float | None
    n: int
    n_kept: int
    coverage: float
    errors: int
    accuracy: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _descending_groups(s: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct thresholds (descending) with the kept count and errors of ``score >= threshold``."""
    order = np.argsort(-s, kind="stable")
    ss = s[order]
    cum_err = np.cumsum(~c[order], dtype=np.int64)
    last = np.ones(len(ss), dtype=bool)
    last[:-1] = ss[:-1] != ss[1:]
    ends = np.flatnonzero(last)
    return ss[ends], ends + 1, cum_err[ends]


def _k_min(r: np.ndarray, level: float) -> np.ndarray:
    """Smallest k with (1 - r)^k = binom.cdf(0, k, r) <= level, per entry of r (inf where r <= 0)."""
    r = np.asarray(r, dtype=np.float64)
    pos = r > 0
    log_q = np.log1p(-np.where(pos, r, 0.5))
    k = np.maximum(1.0, np.ceil(math.log(level) / log_q))
    k = np.where(np.exp(k * log_q) > level, k + 1, k)  # absorb rounding of the closed form
    k = np.where((k > 1) & (np.exp((k - 1) * log_q) <= level), k - 1, k)
    return np.where(pos, k, np.inf)


def _allocation(k: np.ndarray, r: np.ndarray, delta: float, starts: int) -> tuple[np.ndarray, np.ndarray]:
    """Where the fallback procedure puts its ``starts`` shares ``delta / starts``, for each risk level in ``r``.

    Share ``i`` goes to the first candidate keeping at least ``k0 * (top / k0)^(i / (starts - 1))`` samples,
    ``k0 = k_min(r, delta / starts)``, ``top = max(k0, n / 2)`` (geometric spacing; ``starts == 1`` is the
    plain fixed-sequence start ``k0``). Depends on the counts (scores) only, never on correctness.
    Returns candidate indices (len(r), starts) (``len(k)`` = past the end: share unused) and summed levels
    per index (duplicate indices share their levels, each entry showing the sum).
    """
    level = delta / starts
    k0 = _k_min(r, level)
    top = np.maximum(k0, k[-1] / 2.0)
    w = np.arange(starts) / (starts - 1) if starts > 1 else np.zeros(1)
    with np.errstate(invalid="ignore", over="ignore"):
        counts = np.where(np.isfinite(k0)[:, None], k0[:, None] ** (1 - w) * top[:, None] ** w, np.inf)
    idx = np.searchsorted(k, counts, side="left")
    same = idx[:, :, None] == idx[:, None, :]
    levels = np.where(idx < len(k), level * same.sum(axis=2), 0.0)
    return idx, levels


def _fallback(p: np.ndarray, idx: np.ndarray, levels: np.ndarray) -> tuple[int | None, int, float]:
    """Fallback testing (fixed sequence with the level split over several start points) for one risk level.

    Returns the last rejected candidate (None if none), the number of hypotheses tested and the level at
    which the last rejected one was tested.
    """
    points = sorted({(int(i), float(lv)) for i, lv in zip(idx, levels) if lv > 0})
    last, n_tests, carried, last_level = None, 0, 0.0, 0.0
    for m, (a, lv) in enumerate(points):
        end = points[m + 1][0] if m + 1 < len(points) else len(p)
        level = lv + carried
        fails = np.flatnonzero(p[a:end] > level)
        if len(fails):
            n_tests += int(fails[0]) + 1
            if fails[0] > 0:
                last, last_level = a + int(fails[0]) - 1, level
            carried = 0.0
        else:
            n_tests += end - a
            last, last_level, carried = end - 1, level, level
    return last, n_tests, last_level


def _achievable(k: np.ndarray, e: np.ndarray, r: np.ndarray, delta: float, starts: int) -> np.ndarray:
    """Whether the fallback procedure rejects anything at each risk level of ``r`` (vectorised).

    Before the first rejection no level is carried, so it rejects something iff some start rejects its
    first hypothesis at the level allocated there.
    """
    idx, levels = _allocation(k, r, delta, starts)
    j = np.minimum(idx, len(k) - 1)
    p = stats.binom.cdf(e[j], k[j], r[:, None])
    return np.any((levels > 0) & (p <= levels), axis=1)


def _best_bound(k: np.ndarray, e: np.ndarray, delta: float, starts: int, known: float | None) -> float:
    """Smallest risk level at which the fallback procedure rejects something (1.0 if none).

    The set of such levels is a union of intervals whose left ends are Clopper-Pearson bounds at one of the
    possible levels (``delta / starts`` times 1..starts) or points where a start moves (``k_min`` changes);
    the candidates up to ``known`` (a level known to be achievable, or 1) are tried in increasing order.
    Cheap lower bounds (``e / k`` and ``1 - level^(1 / k)``) skip candidates that cannot lie below it.
    """
    cap = 1.0 if known is None else known + 2e-12
    lv = delta / starts
    cands = []
    for m in range(1, starts + 1):
        low = np.maximum(e / k, 1.0 - (lv * m) ** (1.0 / k))
        sel = low < cap
        if sel.any():
            cands.append(clopper_pearson_upper(e[sel], k[sel], lv * m))
    moves = 1.0 - lv ** (1.0 / np.arange(1, k[-1] + 1, dtype=np.float64))  # where k_min(r) changes
    cands.append(moves[moves < cap])
    cand = np.concatenate(cands)
    cand = np.unique(np.concatenate([cand, cand + 1e-12]))  # just above each end point absorbs rounding
    cand = cand[(cand > 0) & (cand < min(cap, 1.0))]  # sorted by np.unique
    lo, size = 0, 1024
    while lo < len(cand):  # the first achievable candidate in increasing order; stop early
        chunk = cand[lo:lo + size]
        ok = _achievable(k, e, chunk, delta, starts)
        if ok.any():
            return float(chunk[np.argmax(ok)])
        lo, size = lo + size, size * 2
    return 1.0 if known is None else known


def _ltt(s: np.ndarray, c: np.ndarray, r: float, delta: float, starts: int) -> dict[str, Any]:
    thr, k, e = _descending_groups(s, c)
    lv = delta / starts
    idx, levels = _allocation(k, np.array([r]), delta, starts)
    chosen, n_tests, level = None, 0, lv
    if r > 0 and (levels > 0).any():
        first = int(idx[0][levels[0] > 0].min())
        p = np.ones(len(k))
        p[first:] = stats.binom.cdf(e[first:], k[first:], r)
        chosen, n_tests, level = _fallback(p, idx[0], levels[0])
    # r is achievable when a threshold was chosen: the best bound is at most r
    best = _best_bound(k, e, delta, starts, known=r if chosen is not None else None)
    return {"chosen": chosen, "best": best, "n_tests": n_tests, "level": level if chosen is not None else lv,
            "thr": thr, "k": k, "e": e}


def _sgr_path(s_asc: np.ndarray, cum_err_from_top: np.ndarray, r: float, level: float, steps: int) -> list[tuple]:
    """Algorithm 1 of Geifman & El-Yaniv (2017), 1-indexed as in the paper; returns every step's
    (threshold, kept, errors, bound, passed)."""
    n = len(s_asc)
    z_min, z_max = 1, n
    out = []
    for _ in range(steps):
        z = math.ceil((z_min + z_max) / 2)
        theta = s_asc[z - 1]
        first = int(np.searchsorted(s_asc, theta, side="left"))  # ties: keep all scores >= theta
        k = n - first
        e = int(cum_err_from_top[k - 1])
        b = 1.0 if e >= k else float(special.betaincinv(e + 1, k - e, 1.0 - level))  # = clopper_pearson_upper
        passed = b <= r
        out.append((float(theta), k, e, b, passed))
        if passed:
            z_max = z
        else:
            z_min = z
    return out


def guaranteed_threshold(
    scores: Any,
    correct: Any,
    *,
    target_accuracy: float,
    delta: float = 0.1,
    method: str = "ltt",
    ltt_starts: int = 1,
) -> GuaranteedThreshold:
    """Threshold whose selective accuracy is >= ``target_accuracy`` with probability >= ``1 - delta``.

    Parameters
    ----------
    scores : array-like of shape (n_cal,)
        Confidence on the calibration data, higher = more confident (negate a score where lower is more
        confident, and the returned threshold with it).
    correct : array-like of bool, shape (n_cal,)
        Whether the prediction the score belongs to is right.
    target_accuracy : float in (0, 1]
        Required accuracy on the kept samples (1.0 can never be guaranteed: ``achievable`` is False).
    delta : float in (0, 1), default=0.1
        Allowed failure probability over the draw of the calibration data.
    method : {"ltt", "sgr"}, default="ltt"
        ``"ltt"``: Learn-then-Test fixed-sequence testing, Angelopoulos et al. 2021 (the whole ``delta`` at
        every test, candidates from the highest threshold down, stop at the first non-rejection).
        ``"sgr"``: the SGR binary search of Geifman & El-Yaniv 2017 (``delta / ceil(log2 n)`` per step).
        See the module docstring.
    ltt_starts : int, default=1
        LTT only: 1 = fixed-sequence testing; ``m > 1`` = the fallback procedure with ``delta`` split over
        ``m`` start points (robust to errors among the most confident samples; see the module docstring).

    Returns
    -------
    GuaranteedThreshold
        ``threshold`` (None when no threshold qualifies), ``coverage``, ``n_selected``, ``errors`` and
        ``bound`` at it on the calibration data, ``best_bound`` (smallest risk the method can certify here),
        ``achievable``, and the settings (method, delta, target, n_cal).
    """
    target = check_fraction("target_accuracy", target_accuracy)
    d = _check_delta(delta)
    check_choice("method", method, tuple(METHODS))
    starts = check_positive_int("ltt_starts", ltt_starts)
    s, c = _check_inputs(scores, correct)
    n = len(s)
    r = 1.0 - target

    chosen: tuple[float, int, int, float] | None
    if method == "ltt":
        res = _ltt(s, c, r, d, starts)
        level, n_tests, best = res["level"], res["n_tests"], res["best"]
        j = res["chosen"]
        chosen = None if j is None else (float(res["thr"][j]), int(res["k"][j]), int(res["e"][j]),
                                         float(clopper_pearson_upper(int(res["e"][j]), int(res["k"][j]), level)))
    else:
        steps = max(1, math.ceil(math.log2(n)))
        level, n_tests = d / steps, steps
        s_asc = np.sort(s, kind="stable")
        cum_err = np.cumsum(~c[np.argsort(-s, kind="stable")], dtype=np.int64)  # errors among the top k
        path = _sgr_path(s_asc, cum_err, r, level, steps)
        passed = [step for step in path if step[4]]
        chosen = passed[-1][:4] if passed else None
        # the first passing step lies on the all-fail path, which does not depend on r*
        best = min(step[3] for step in _sgr_path(s_asc, cum_err, -1.0, level, steps))
        best = best if best < 1.0 else 1.0

    name = METHODS[method]
    if method == "ltt" and starts > 1:
        name = f"Learn-then-Test fallback testing, delta split over {starts} starts (Angelopoulos et al. 2021)"
    common = {"method": method, "method_name": name, "target_accuracy": target, "max_risk": r, "delta": d,
              "per_test_delta": level, "ltt_starts": starts if method == "ltt" else None, "n_cal": n,
              "n_tests": n_tests, "best_bound": float(best)}
    if chosen is None:
        return GuaranteedThreshold(**common, achievable=False, threshold=None, coverage=0.0, n_selected=0, errors=0,
                                   bound=None)
    thr, k, e, b = chosen
    return GuaranteedThreshold(**common, achievable=True, threshold=thr, coverage=k / n, n_selected=k, errors=e,
                               bound=b)


def selective_outcome(scores: Any, correct: Any, threshold: float | None) -> SelectiveOutcome:
    """Coverage and accuracy of the rule ``score >= threshold`` on (held-out) data.

    Parameters
    ----------
    scores : array-like of shape (n,)
        Confidence, oriented as for :func:`guaranteed_threshold`.
    correct : array-like of bool, shape (n,)
    threshold : float or None
        None keeps nothing (coverage 0).

    Returns
    -------
    SelectiveOutcome
        ``coverage``, ``accuracy`` (None when nothing is kept), ``n_kept``, ``errors``, ``n``.
    """
    s, c = _check_inputs(scores, correct)
    if threshold is None:
        return SelectiveOutcome(None, len(s), 0, 0.0, 0, None)
    t = float(threshold)
    if math.isnan(t):
        raise ClipauditError("threshold must be a number or None, got NaN.")
    kept = s >= t
    n_kept = int(kept.sum())
    errors = int((kept & ~c).sum())
    return SelectiveOutcome(t, len(s), n_kept, n_kept / len(s), errors,
                            (n_kept - errors) / n_kept if n_kept else None)

