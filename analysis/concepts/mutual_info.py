r"""Mutual information between the vision-side and text-side concept sets, its removal curve and AUC
(spec §1.11-1.12).

Two MI definitions over the N x M match table :math:`T_{ij} = [X_i = Y_j]` (X: the N vision-side
descriptor ids, most relevant first; Y: the M text-side ids):

- ``"textbook"`` (the paper's Eq. 1): :math:`I(X;Y) = \sum_{ij} p_{ij} \ln \frac{p_{ij}}{p_i p_j}` with
  :math:`p = T / \sum T`, computed by :func:`sklearn.metrics.mutual_info_score` on the table. With k
  matches between unique ids this is :math:`\ln k`.
- ``"released"`` (the released code, ``utils.get_intersection``): :math:`\ln N + \ln M + H` with
  :math:`H = -\sum p \ln(p + 10^{-9})`, i.e. :math:`\ln(N M k)` for k >= 1. The paper's reported numbers
  (e.g. MI 8.19 for ViT-B/16-dfn) follow this one.

Both are 0 when nothing matches. **Default: "released"**, so numbers are comparable with the paper's tables.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .._checks import check_choice

__all__ = [
    "MI_VARIANTS",
    "match_table",
    "mutual_information",
    "removal_curve",
    "average_curves",
    "auc_reference",
    "auc_trapezoid",
    "curve_frame",
]

MI_VARIANTS = ("released", "textbook")


def match_table(x: Sequence[int], y: Sequence[int]) -> np.ndarray:
    """Contingency table of shape (len(x), len(y)) with 1 where ``x[i] == y[j]``."""
    return (np.asarray(x)[:, None] == np.asarray(y)[None, :]).astype(np.float64).reshape(len(x), len(y))


def mutual_information(x: Sequence[int], y: Sequence[int], *, variant: str = "released") -> float:
    """MI between descriptor-id lists ``x`` (vision side) and ``y`` (text side).

    Parameters
    ----------
    x, y : sequence of int
        Descriptor ids; ids that are in no other list (e.g. a removal sentinel) never match.
    variant : {"released", "textbook"}, default="released"
        See the module docstring.

    Returns
    -------
    float
        Natural-log MI; 0.0 when the lists share no id or one is empty.

    Examples
    --------
    >>> bool(np.isclose(mutual_information([1, 2, 3], [3, 2, 9, 8]), np.log(3 * 4 * 2)))
    True
    >>> bool(np.isclose(mutual_information([1, 2, 3], [3, 2, 9, 8], variant="textbook"), np.log(2)))
    True
    """
    check_choice("variant", variant, MI_VARIANTS)
    table = match_table(x, y)
    total = table.sum()
    if total == 0:
        return 0.0
    if variant == "textbook":
        from sklearn.metrics import mutual_info_score

        return float(mutual_info_score(None, None, contingency=table))
    p = table / total
    entropy = -float(np.sum(p * np.log(p + 1e-9)))
    return float(np.log(len(x)) + np.log(len(y)) + entropy)


def removal_curve(x: Sequence[int], y: Sequence[int], *, variant: str = "released") -> np.ndarray:
    """MI as the vision-side ids are removed one by one, most relevant (first) first.

    Each removed id is replaced by a sentinel that matches nothing, so N stays fixed (as the reference).

    Returns
    -------
    ndarray of shape (len(x) + 1,)
        Point 0 is the unperturbed MI; the last point is 0.
    """
    x = [int(v) for v in x]
    sentinel = max([*x, *(int(v) for v in y), 0]) + 1
    current = list(x)
    curve = [mutual_information(current, y, variant=variant)]
    for i in range(len(x)):
        current[i] = sentinel
        curve.append(mutual_information(current, y, variant=variant))
    return np.asarray(curve, dtype=np.float64)


def average_curves(curves: Sequence[np.ndarray]) -> np.ndarray:
    """Zero-pad curves at the end to the longest one and average them pointwise."""
    curves = [np.asarray(c, dtype=np.float64).ravel() for c in curves]
    if not curves:
        return np.zeros(0)
    length = max(len(c) for c in curves)
    padded = np.zeros((len(curves), length))
    for row, c in zip(padded, curves, strict=True):
        row[: len(c)] = c
    return padded.mean(axis=0)


def auc_reference(curve: np.ndarray) -> float:
    """The reference's AUC: the arithmetic mean of the curve, i.e. a left Riemann sum on x in [0, 1) with
    step 1/L. 0.0 for an empty curve."""
    curve = np.asarray(curve, dtype=np.float64)
    return float(curve.mean()) if curve.size else 0.0


def auc_trapezoid(curve: np.ndarray) -> float:
    """Trapezoid-rule area under the curve on an x-axis normalised to [0, 1] (``sklearn.metrics.auc``).

    A single point gives its value (a constant curve); an empty curve gives 0.0.
    """
    from sklearn.metrics import auc

    curve = np.asarray(curve, dtype=np.float64)
    if curve.size == 0:
        return 0.0
    if curve.size == 1:
        return float(curve[0])
    return float(auc(np.linspace(0.0, 1.0, curve.size), curve))


def curve_frame(curves: dict[str, np.ndarray]) -> pd.DataFrame:
    """Long table (method, step, mi) of named curves, for result files."""
    rows = [
        {"method": name, "step": i, "mi": float(v)}
        for name, curve in curves.items() for i, v in enumerate(np.asarray(curve))
    ]
    return pd.DataFrame(rows, columns=["method", "step", "mi"])
