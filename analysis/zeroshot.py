"""Prompt-ensemble zero-shot classification (CLIP, Radford et al. 2021).

:func:`zeroshot_table` is the pure core (embeddings in, DataFrame out); :func:`run_zeroshot` fetches the
embeddings through the cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ._checks import ClipauditError
from .cache import EmbeddingCache
from .data import ImageDataset, TemplateSet, load_templates
from .ensemble import ensemble_weights, logits, softmax
from .metrics import classification_summary
from .models import ClipModel

__all__ = ["zeroshot_table", "run_zeroshot", "ZeroShotResult"]


@dataclass
class ZeroShotResult:
    """Metrics, the per-sample table and what was skipped."""

    metrics: dict[str, float]
    predictions: pd.DataFrame
    logits: np.ndarray  # (n_valid, n_classes), rows in predictions order
    skipped: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def zeroshot_table(features: np.ndarray, labels: np.ndarray, class_weights: np.ndarray, *, scale: float,
                   bias: float | None = None, classnames: Sequence[str] | None = None,
                   index: np.ndarray | None = None) -> tuple[pd.DataFrame, dict[str, float], np.ndarray]:
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

    Returns
    -------
    table : DataFrame
        One row per image: index, label, pred, correct, top5 (list), max_logit, max_softmax.
    metrics : dict
        ``acc1``, ``acc5`` (omitted with fewer than 5 classes), ``mean_per_class_recall``.
    logits : ndarray of shape (n_samples, n_classes)
    """
    if len(features) == 0:
        raise ClipauditError("No images to classify (all images were skipped or the dataset is empty).")
    if (labels < 0).any():
        raise ClipauditError("Zero-shot classification needs a class label for every image.")
    z = logits(features, class_weights, scale, bias)
    order = np.argsort(-z, axis=1, kind="stable")
    k = min(5, z.shape[1])
    probs = softmax(z, axis=1)
    pred = order[:, 0]
    table = pd.DataFrame({
        "index": np.arange(len(z)) if index is None else index,
        "label": labels,
        "pred": pred,
        "correct": pred == labels,
        f"top{k}": [row.tolist() for row in order[:, :k]],
        "max_logit": z.max(1),
        "max_softmax": probs.max(1),
    })
    if classnames is not None:
        names = np.asarray(list(classnames), dtype=object)
        table.insert(2, "label_name", names[labels])
        table.insert(4, "pred_name", names[pred])
    return table, classification_summary(z, labels), z


def run_zeroshot(model: ClipModel, dataset: ImageDataset, cache: EmbeddingCache, *,
                 templates: str | TemplateSet = "openai_imagenet") -> ZeroShotResult:
    """Zero-shot accuracy of ``model`` on ``dataset`` with a prompt ensemble (all embeddings cached)."""
    tset = load_templates(templates)
    img = cache.image_features(model, dataset)
    weights = ensemble_weights(cache.class_embeddings(model, dataset.classnames, tset))
    keep = np.flatnonzero(img.valid)
    table, metrics, z = zeroshot_table(
        img.features[keep], dataset.labels[keep], weights, scale=model.logit_scale, bias=model.logit_bias,
        classnames=dataset.classnames, index=keep,
    )
    metrics = {**metrics, "n_images": int(len(keep)), "n_skipped": len(img.skipped)}
    info = {"templates": tset.name, "n_templates": len(tset), "logit_scale": model.logit_scale,
            "logit_bias": model.logit_bias}
    return ZeroShotResult(metrics, table, z, img.skipped, info)
