"""Prompt ensembling and logits (pure functions over arrays).

The ensemble follows CLIP (Radford et al. 2021) and ``open_clip.build_zero_shot_classifier``: per-template
text embeddings are L2-normalised, averaged over templates and renormalised. It is computed here from
cached per-template embeddings (which the confidence pipeline also needs one by one); a test checks it
equals ``open_clip.build_zero_shot_classifier`` on the same model.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax, softmax

__all__ = ["ensemble_weights", "logits", "softmax", "log_softmax"]


def ensemble_weights(per_template: np.ndarray) -> np.ndarray:
    """Class weights from per-template embeddings.

    Parameters
    ----------
    per_template : ndarray of shape (n_templates, n_classes, dim)
        L2-normalised text embeddings, one per (template, class).

    Returns
    -------
    ndarray of shape (n_classes, dim)
        Mean over templates, renormalised to unit length.
    """
    mean = np.asarray(per_template, dtype=np.float32).mean(axis=0)
    return mean / np.linalg.norm(mean, axis=-1, keepdims=True)


def logits(features: np.ndarray, weights: np.ndarray, scale: float, bias: float | None = None) -> np.ndarray:
    """``scale * features @ weights.T (+ bias)``: (n_samples, dim) x (n_classes, dim) -> (n_samples, n_classes)."""
    out = scale * (np.asarray(features, np.float32) @ np.asarray(weights, np.float32).T)
    return out + bias if bias is not None else out
