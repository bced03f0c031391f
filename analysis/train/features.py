"""Locked-tower features for LiT training: :class:`LitFeatures` and the functions that compute them.

:func:`lit_tower_features` gives the frozen image (and text) tower features of a dataset and its captions,
:func:`lit_text_features` those of any caption or prompt strings; both are memoised in the embedding cache.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .captions import CaptionPool

__all__ = ["LitFeatures", "lit_tower_features", "lit_text_features"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LitFeatures:
    """Locked-tower features for LiT: one row per image, one row per caption string of ``pool``.

    Attributes
    ----------
    image : ndarray of shape (n_images, d_image), float32
    text : ndarray of shape (len(pool.texts), d_text), float32, or None
        None when the text tower is trained (captions are encoded per batch).
    pool : CaptionPool
    labels : ndarray of shape (n_images,), int64
    fingerprint : str
        Identifies towers, data and captions (part of the checkpoint check on resume).
    """

    image: np.ndarray
    text: np.ndarray | None
    pool: CaptionPool
    labels: np.ndarray
    fingerprint: str


def lit_tower_features(dataset: Any, pool: CaptionPool, *, cache: Any = None, device: str | torch.device = "cpu",
                       image_size: int = 224, batch_size: int = 64, progress: bool = True,
                       text: bool = True) -> LitFeatures:
    """Frozen LiT tower features of ``dataset`` and of the captions of ``pool``, memoised in the cache.

    ``text=False`` (the text tower is trained): image features only, ``LitFeatures.text`` is None.

    Image features are the pooled EfficientNet-Lite0 map (1280-d), text features the MiniLM sentence
    embedding (384-d), from :mod:`analysis.models.lit`, both encoded by the embedding cache
    (:meth:`EmbeddingCache.lit_image_features`, :meth:`EmbeddingCache.lit_text_features`): image rows are
    stored per image of the root dataset in chunks of ``cache.chunk_size``, so an interrupted extraction
    resumes from its last chunk and a subset reads its parent's rows. Unreadable images (and, with the
    cache's ``skip_bad``, images with non-finite features) get a zero row and no caption (they are never
    drawn); a non-finite feature otherwise raises :class:`~analysis._checks.ClipauditError`.
    """
    from ..cache import EmbeddingCache
    from ..data.base import hash_items
    from ..models import lit

    cache = cache if cache is not None else EmbeddingCache(enabled=False, progress=progress)
    towers = lit.get_towers(device)
    image = cache.lit_image_features(towers, dataset, image_size=image_size, batch_size=batch_size)
    text_rows = lit_text_features(pool.texts, cache=cache, device=device, progress=progress) if text else None
    pool = dataclasses.replace(pool, counts=np.where(image.valid, pool.counts, 0))
    fingerprint = hash_items(towers.fingerprint(), dataset.fingerprint(), image_size, pool.texts,
                             pool.starts.tolist(), pool.counts.tolist())
    return LitFeatures(image.features, text_rows, pool, np.asarray(dataset.labels), fingerprint)


def lit_text_features(texts: Sequence[str], *, cache: Any = None, device: str | torch.device = "cpu",
                      progress: bool = False, batch_size: int = 256) -> np.ndarray:
    """Frozen LiT text-tower features (MiniLM sentence embeddings, 384-d) of ``texts``, memoised in the cache.

    Same cache entries as :func:`lit_tower_features` (keyed by the towers' fingerprint and the texts), so
    prompts encoded for training or evaluation are encoded once.
    """
    from ..cache import EmbeddingCache
    from ..models import lit

    cache = cache if cache is not None else EmbeddingCache(enabled=False, progress=progress)
    return cache.lit_text_features(lit.get_towers(device), texts, batch_size=batch_size)
