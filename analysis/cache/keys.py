"""Cache keys: a stable hash over everything that changes an embedding."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["cache_key", "CACHE_FORMAT"]

#: Bump when the on-disk layout changes: old entries are then ignored, not misread.
#: 2: rows stored per image of the root dataset, chunks carry their row numbers; feature kinds.
#: 3: entries record their key parts and SHA-256 checksums of their arrays; per-entry file locks.
CACHE_FORMAT = 3


def cache_key(parts: dict[str, Any]) -> str:
    """SHA-256 (first 32 hex digits) of ``parts`` serialised as canonical JSON."""
    blob = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]
