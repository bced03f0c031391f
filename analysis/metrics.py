"""Classification and retrieval metrics (pure; scikit-learn naming: ``*_score`` is higher-better)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import balanced_accuracy_score, top_k_accuracy_score

from ._checks import ClipauditError

__all__ = ["topk_accuracy", "mean_per_class_recall", "classification_summary", "recall_at_k"]


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of rows whose label is among the ``k`` highest scores (``sklearn.metrics.top_k_accuracy_score``)."""
    n_classes = scores.shape[1]
    if k > n_classes:
        raise ClipauditError(f"k={k} is larger than the number of classes ({n_classes}).")
    if n_classes == 2 and k == 1:
        return float(np.mean(scores.argmax(1) == labels))
    return float(top_k_accuracy_score(labels, scores, k=k, labels=np.arange(n_classes)))


def mean_per_class_recall(labels: np.ndarray, preds: np.ndarray) -> float:
    """Mean of per-class recall over the classes present in ``labels`` (``balanced_accuracy_score``)."""
    return float(balanced_accuracy_score(labels, preds))


def classification_summary(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """CLIP_benchmark's metrics: ``acc1``, ``acc5`` (only with >= 5 classes), ``mean_per_class_recall``."""
    out = {"acc1": topk_accuracy(scores, labels, 1)}
    if scores.shape[1] >= 5:
        out["acc5"] = topk_accuracy(scores, labels, 5)
    out["mean_per_class_recall"] = mean_per_class_recall(labels, scores.argmax(1))
    return out


def recall_at_k(similarity: np.ndarray, positives: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)) -> dict[int, float]:
    """CLIP-paper recall@k: fraction of queries with at least one positive among the top k.

    Parameters
    ----------
    similarity : ndarray of shape (n_queries, n_items)
    positives : bool ndarray of shape (n_queries, n_items)
        ``positives[q, i]`` is True when item ``i`` is a correct match for query ``q``.
    """
    if similarity.shape != positives.shape:
        raise ClipauditError(f"similarity {similarity.shape} and positives {positives.shape} differ in shape.")
    if not positives.any(axis=1).all():
        raise ClipauditError("Every query needs at least one positive item.")
    # rank of the best positive = number of items scoring strictly higher than it
    best_pos = np.where(positives, similarity, -np.inf).max(axis=1, keepdims=True)
    rank = (similarity > best_pos).sum(axis=1)
    return {k: float(np.mean(rank < k)) for k in ks}
