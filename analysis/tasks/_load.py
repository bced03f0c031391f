"""Turn the shared option groups into objects: the dataset, the model, the cache (the edges of a run)."""

from __future__ import annotations

from typing import Any

from ._common import DataOptions, ModelOptions, OutputOptions

__all__ = ["load_dataset", "load_model", "make_cache", "resolve_device"]


def resolve_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_dataset(o: DataOptions) -> Any:
    """The dataset (and ``--limit`` subset) the options name; raises before any model is loaded."""
    from ..data import create_dataset

    kwargs: dict[str, Any] = {"root": o.root, "classnames": o.classnames, "limit": o.limit, "seed": o.seed,
                              "allow_duplicate_classnames": o.allow_duplicate_classnames}
    if o.split is not None:
        kwargs["split"] = o.split
    return create_dataset(o.dataset, **kwargs)


def load_model(name: str, pretrained: str | None, device: str) -> Any:
    from ..models import load_model as _load

    return _load(name, pretrained, device=resolve_device(device))


def load_model_from(o: ModelOptions) -> Any:
    return load_model(o.model, o.pretrained, o.device)


def make_cache(o: OutputOptions) -> Any:
    from ..cache import EmbeddingCache

    return EmbeddingCache(o.cache_dir, dtype=o.cache_dtype, batch_size=o.batch_size, progress=not o.quiet,
                          enabled=not o.no_cache, skip_bad=o.skip_bad)
