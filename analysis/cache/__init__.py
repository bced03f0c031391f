"""Embedding cache: image and text embeddings on disk, keyed by model, data, transform and prompts."""

from .encode import CacheStats, EmbeddingCache, ImageFeatures
from .keys import cache_key

__all__ = ["EmbeddingCache", "ImageFeatures", "CacheStats", "cache_key"]
