"""Embedding cache: every encoder of the package, with its features on disk keyed by model, data and transform."""

from .encode import CacheStats, EmbeddingCache, ImageFeatures, PatchTokens, Request, root_of
from .keys import CACHE_FORMAT, cache_key
from .kinds import KINDS, FeatureKind

__all__ = ["EmbeddingCache", "ImageFeatures", "PatchTokens", "CacheStats", "Request", "root_of", "cache_key",
           "CACHE_FORMAT", "KINDS", "FeatureKind"]
