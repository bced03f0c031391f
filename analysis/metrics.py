"""Classification and retrieval metrics (pure; scikit-learn naming: ``*_score`` is higher-better).

Every classification metric here reads one ranking of the classes, :func:`top_k_indices`: higher score first,
and among exactly equal scores the lower class index first (``np.argmax``'s rule). acc@1, acc@5, the predicted
class and mean per-class recall therefore agree with one another under exact ties (which are real: ImageNet's
class names repeat "missile" and "sunglasses", so those classes get identical zero-shot weights).
"""

from __future__ import annotations

import numpy as np

from ._checks import ClipauditError

__all__ = ["top_k_indices", "topk_accuracy", "mean_per_class_recall", "classification_summary", "recall_at_k"]

_CHUNK_ELEMENTS = 2**22  # scores examined at once by top_k_indices (bounds the temporary masks)


def _score_matrix(scores: np.ndarray) -> np.ndarray:
    s = np.asarray(scores)
    if s.ndim != 2:
        raise ClipauditError(f"scores must be a 2-d array (n_samples, n_classes); got shape {s.shape}.")
    if not np.issubdtype(s.dtype, np.floating):
        if not (np.issubdtype(s.dtype, np.integer) or s.dtype == bool):
            raise ClipauditError(f"scores must be numbers; got dtype {s.dtype}.")
        s = s.astype(np.float64)
    if np.isnan(s).any():  # NaN ranks as -inf (lowest), ties with -inf broken by class index
        s = np.where(np.isnan(s), -np.inf, s)
    return s


def _top_k_chunk(s: np.ndarray, k: int) -> np.ndarray:
    n, c = s.shape
    rows = np.arange(n)[:, None]
    # partial selection: the k largest in some order, then the k-th largest value of each row
    cand = np.argpartition(-s, k - 1, axis=1)[:, :k]
    kth = s[rows, cand].min(axis=1, keepdims=True)
    n_above = (s > kth).sum(axis=1)
    n_at = (s == kth).sum(axis=1)
    # Rows where more classes tie with the k-th value than fit: argpartition picked an arbitrary subset of
    # the tied classes, so take those strictly above plus the tied classes of lowest index.
    fix = np.flatnonzero(n_above + n_at > k)
    if len(fix):
        sub, kth_sub = s[fix], kth[fix]
        tied = sub == kth_sub
        need = (k - n_above[fix])[:, None]
        keep = (sub > kth_sub) | (tied & (np.cumsum(tied, axis=1) <= need))
        cand[fix] = np.nonzero(keep)[1].reshape(len(fix), k)  # exactly k per row, in index order
    cand.sort(axis=1)  # index order, so a stable sort by score puts the lower index first among equals
    order = np.argsort(-s[rows, cand], axis=1, kind="stable")
    return np.take_along_axis(cand, order, axis=1)


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` best classes of every row, best first, in the package's one stable order.

    Order: higher score first; among exactly equal scores, lower class index first (as ``np.argmax`` and
    ``np.argsort(-scores, kind="stable")``). NaN ranks as ``-inf``. Computed by partial selection
    (``np.argpartition``, then a sort of the ``k`` candidates), so a row of C classes costs O(C + k log k),
    not a full sort; every class tied with the k-th value is resolved by index.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_classes)
    k : int
        Number of classes kept, 1 <= k <= n_classes.

    Returns
    -------
    ndarray of int64, shape (n_samples, k)
        Column 0 is the predicted class.
    """
    s = _score_matrix(scores)
    n, c = s.shape
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= c:
        raise ClipauditError(f"k must be an integer in 1..{c} (the number of classes); got {k!r}.")
    k = int(k)
    if k == 1:
        return s.argmax(axis=1)[:, None].astype(np.int64)
    if k == c:
        return np.argsort(-s, axis=1, kind="stable").astype(np.int64)
    out = np.empty((n, k), dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // c)
    for start in range(0, n, step):
        out[start : start + step] = _top_k_chunk(s[start : start + step], k)
    return out


def _hits(top: np.ndarray, labels: np.ndarray) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.shape != (len(top),):
        raise ClipauditError(f"labels must have shape ({len(top)},), one per row of scores; got {lab.shape}.")
    return (top == lab[:, None]).any(axis=1)


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int, *, top: np.ndarray | None = None) -> float:
    """Fraction of rows whose label is among the first ``k`` classes of :func:`top_k_indices`.

    Without exact ties this equals ``sklearn.metrics.top_k_accuracy_score``; with ties it follows the
    stable order (lower class index first) instead of sklearn's (higher index first).

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_classes)
    labels : ndarray of shape (n_samples,)
    k : int
    top : ndarray of shape (n_samples, >= k), optional
        Precomputed ``top_k_indices(scores, K)`` with K >= k (its first k columns are used).
    """
    n_classes = np.shape(scores)[1]
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n_classes:
        raise ClipauditError(f"k={k!r} must be an integer in 1..{n_classes} (the number of classes).")
    if top is None or top.shape[1] < k:
        top = top_k_indices(scores, k)
    return float(np.mean(_hits(top[:, :k], labels)))


def mean_per_class_recall(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean of per-class recall over the classes present in ``labels`` (``balanced_accuracy_score``)."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(labels, preds))


def classification_summary(scores: np.ndarray, labels: np.ndarray, *,
                           top: np.ndarray | None = None) -> dict[str, float]:
    """CLIP_benchmark's metrics from one ranking: ``acc1``, ``acc5`` (with >= 5 classes), ``mean_per_class_recall``.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_classes)
    labels : ndarray of shape (n_samples,)
    top : ndarray, optional
        Precomputed ``top_k_indices(scores, min(5, n_classes))`` (e.g. the table's ``top5`` column).
    """
    c = np.shape(scores)[1]
    k = min(5, c)
    if top is None or top.shape[1] < k:
        top = top_k_indices(scores, k)
    out = {"acc1": float(np.mean(_hits(top[:, :1], labels)))}
    if c >= 5:
        out["acc5"] = float(np.mean(_hits(top[:, :5], labels)))
    out["mean_per_class_recall"] = mean_per_class_recall(labels, top[:, 0])
    return out


def recall_at_k(similarity: np.ndarray, positives: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """CLIP-paper recall@k: fraction of queries with at least one positive among the top k.

    Parameters
    ----------
    similarity : ndarray of shape (n_queries, n_items)
    positives : bool ndarray of shape (n_queries, n_items)
        ``positives[q, i]`` is True when item ``i`` is a correct match for query ``q``.
    ks : tuple of int
        Each k must be at most ``n_items`` (a recall@k over fewer candidates than k is always 1).

    Notes
    -----
    Ties count in the query's favour: the rank of the best positive is the number of items scoring strictly
    higher than it.
    """
    if similarity.shape != positives.shape:
        raise ClipauditError(f"similarity {similarity.shape} and positives {positives.shape} differ in shape.")
    if not positives.any(axis=1).all():
        raise ClipauditError("Every query needs at least one positive item.")
    too_big = [k for k in ks if k > similarity.shape[1]]
    if too_big:
        raise ClipauditError(f"recall@k needs k <= the number of candidates ({similarity.shape[1]}); got {too_big}.")
    # rank of the best positive = number of items scoring strictly higher than it
    best_pos = np.where(positives, similarity, -np.inf).max(axis=1, keepdims=True)
    rank = (similarity > best_pos).sum(axis=1)
    return {k: float(np.mean(rank < k)) for k in ks}
