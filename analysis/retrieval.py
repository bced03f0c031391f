"""Image-text retrieval recall@k in both directions (CLIP-paper convention, several captions per image)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .metrics import recall_at_k

__all__ = ["retrieval_scores"]


def retrieval_scores(image_features: np.ndarray, text_features: np.ndarray, text_to_image: np.ndarray,
                     ks: Sequence[int] = (1, 5, 10)) -> tuple[dict[str, float], pd.DataFrame]:
    """Recall@k for image->text and text->image.

    Parameters
    ----------
    image_features : ndarray of shape (n_images, dim)
    text_features : ndarray of shape (n_texts, dim)
    text_to_image : int ndarray of shape (n_texts,)
        The image each caption describes.

    Returns
    -------
    metrics : dict
        ``image_to_text_recall@k`` (an image query is a hit when any of its captions is in the top k)
        and ``text_to_image_recall@k`` (a caption query is a hit when its image is in the top k).
        Ties count in the query's favour. Each direction reports every k up to its number of candidates
        (image->text: k <= n_texts; text->image: k <= n_images); larger k are omitted, not reported as 1.
    per_query : DataFrame
        Rank of the best positive for every image and caption query.
    """
    n_img = len(image_features)
    positives = np.zeros((len(text_features), n_img), dtype=bool)
    positives[np.arange(len(text_features)), text_to_image] = True
    sim = np.asarray(image_features, np.float32) @ np.asarray(text_features, np.float32).T
    # each direction keeps the k its own candidate count allows: an image query ranks n_texts captions,
    # a caption query ranks n_images images
    i2t = recall_at_k(sim, positives.T, tuple(k for k in ks if k <= sim.shape[1]))
    t2i = recall_at_k(sim.T, positives, tuple(k for k in ks if k <= sim.shape[0]))
    metrics = {f"image_to_text_recall@{k}": v for k, v in i2t.items()}
    metrics |= {f"text_to_image_recall@{k}": v for k, v in t2i.items()}
    best_i = np.where(positives.T, sim, -np.inf).max(1, keepdims=True)
    best_t = np.where(positives, sim.T, -np.inf).max(1, keepdims=True)
    per_query = pd.concat([
        pd.DataFrame({"direction": "image_to_text", "query": np.arange(n_img), "rank": (sim > best_i).sum(1)}),
        pd.DataFrame({"direction": "text_to_image", "query": np.arange(len(text_features)),
                      "rank": (sim.T > best_t).sum(1)}),
    ], ignore_index=True)
    return metrics, per_query

