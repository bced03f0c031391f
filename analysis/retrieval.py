"""Image-text retrieval recall@k in both directions (CLIP-paper convention, several captions per image)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ._checks import ClipauditError
from .cache import EmbeddingCache
from .data import ImageDataset
from .metrics import recall_at_k
from .models import ClipModel

__all__ = ["retrieval_scores", "run_retrieval", "RetrievalResult"]


@dataclass
class RetrievalResult:
    metrics: dict[str, float]
    per_query: pd.DataFrame
    skipped: list[dict[str, str]] = field(default_factory=list)


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
        Ties count in the query's favour.
    per_query : DataFrame
        Rank of the best positive for every image and caption query.
    """
    n_img = len(image_features)
    positives = np.zeros((len(text_features), n_img), dtype=bool)
    positives[np.arange(len(text_features)), text_to_image] = True
    sim = np.asarray(image_features, np.float32) @ np.asarray(text_features, np.float32).T
    ks = tuple(k for k in ks if k <= max(1, min(sim.shape)))
    i2t = recall_at_k(sim, positives.T, ks)
    t2i = recall_at_k(sim.T, positives, ks)
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


def run_retrieval(model: ClipModel, dataset: ImageDataset, cache: EmbeddingCache,
                  ks: Sequence[int] = (1, 5, 10)) -> RetrievalResult:
    """Retrieval recall@k of ``model`` on a captioned dataset (embeddings through the cache)."""
    if not dataset.captions:
        raise ClipauditError(
            f"Dataset {dataset.name!r} has no captions: retrieval needs a manifest with a 'caption' column."
        )
    img = cache.image_features(model, dataset)
    keep = np.flatnonzero(img.valid)
    texts, owner = [], []
    for new_i, i in enumerate(keep):
        for cap in dataset.captions[i]:
            texts.append(cap)
            owner.append(new_i)
    if not texts:
        raise ClipauditError(f"Dataset {dataset.name!r}: the readable images have no captions.")
    txt = cache.text_features(model, texts)
    metrics, per_query = retrieval_scores(img.features[keep], txt, np.asarray(owner), ks)
    metrics |= {"n_images": int(len(keep)), "n_texts": len(texts), "n_skipped": len(img.skipped)}
    return RetrievalResult(metrics, per_query, img.skipped)
