"""Prompt-ensemble zero-shot classification (CLIP, Radford et al. 2021).

:func:`zeroshot_table` is the pure core (embeddings in, DataFrame out); the ``zeroshot`` task
(:mod:`analysis.tasks.zeroshot`) feeds it the run's shared classifier state.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ._checks import ClipauditError
from .ensemble import logits as compute_logits
from .ensemble import softmax
from .metrics import classification_summary, top_k_indices

__all__ = ["zeroshot_table"]


def zeroshot_table(features: np.ndarray, labels: np.ndarray, class_weights: np.ndarray, *, scale: float,
                   bias: float | None = None, classnames: Sequence[str] | None = None,
                   index: np.ndarray | None = None,
                   logits: np.ndarray | None = None) -> tuple[pd.DataFrame, dict[str, float], np.ndarray]:
    """Classify embedded images against class weights.

    Parameters
    ----------
    features : ndarray of shape (n_samples, dim)
        L2-normalised image embeddings.
    labels : ndarray of shape (n_samples,)
        True class indices.
    class_weights : ndarray of shape (n_classes, dim)
        Zero-shot classifier (e.g. :func:`analysis.ensemble.ensemble_weights`).
    scale, bias : float
        The model's logit scale (and bias): logits = scale * cos + bias. Softmax uses these logits.
    classnames : list of str, optional
        Adds ``label_name``/``pred_name`` columns.
    index : ndarray of shape (n_samples,), optional
        Dataset indices of the rows (default 0..n-1).
    logits : ndarray of shape (n_samples, n_classes), optional
        Precomputed ``scale * features @ class_weights.T + bias`` (the run's shared classifier state has them);
        computed here when omitted.

    Returns
    -------
    table : DataFrame
        One row per image: index, label, pred, correct, top5 (list), max_logit, max_softmax. ``pred`` and
        ``top5`` follow :func:`analysis.metrics.top_k_indices` (on exact ties the lower class index ranks
        first), the same order the metrics read.
    metrics : dict
        ``acc1``, ``acc5`` (omitted with fewer than 5 classes), ``mean_per_class_recall``.
    logits : ndarray of shape (n_samples, n_classes)
    """
    if len(features) == 0:
        raise ClipauditError("No images to classify (all images were skipped or the dataset is empty).")
    if (labels < 0).any():
        raise ClipauditError("Zero-shot classification needs a class label for every image.")
    z = compute_logits(features, class_weights, scale, bias) if logits is None else np.asarray(logits)
    if z.shape != (len(features), len(class_weights)):
        raise ClipauditError(f"logits have shape {z.shape}; expected {(len(features), len(class_weights))}.")
    k = min(5, z.shape[1])
    order = top_k_indices(z, k)  # the one stable order: higher logit first, lower class index on exact ties
    probs = softmax(z, axis=1)
    pred = order[:, 0]
    table = pd.DataFrame({
        "index": np.arange(len(z)) if index is None else index,
        "label": labels,
        "pred": pred,
        "correct": pred == labels,
        f"top{k}": [row.tolist() for row in order],
        "max_logit": z.max(1),
        "max_softmax": probs.max(1),
    })
    if classnames is not None:
        names = np.asarray(list(classnames), dtype=object)
        table.insert(2, "label_name", names[labels])
        table.insert(4, "pred_name", names[pred])
    return table, classification_summary(z, labels, top=order), z

