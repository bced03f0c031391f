"""LiT mode: train heads (and optionally the text tower) on cached frozen-tower features (:func:`train_lit`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import ClipauditError
from .config import TrainConfig, TrainResult
from .distributed import DistInfo, barrier
from .features import LitFeatures
from .loop import fit
from .losses import LogitScale
from .sources import FeatureSource

__all__ = ["train_lit"]


class _LitTextPairs(nn.Module):
    """``heads`` on cached image features and on a trained text encoder's features of caption strings."""

    def __init__(self, heads: nn.Module, text_encoder: nn.Module) -> None:
        super().__init__()
        self.heads, self.text_encoder = heads, text_encoder

    @property
    def logit_scale(self) -> torch.Tensor | LogitScale:
        return self.heads.logit_scale

    def forward(self, image_features: torch.Tensor, texts: Sequence[str]):
        return self.heads(image_features, self.text_encoder(texts))


def train_lit(feature_fn: Callable[[], LitFeatures], heads: nn.Module, out_dir: str | os.PathLike[str], *,
              config: TrainConfig | None = None, save_fn: Callable[[nn.Module, Path, dict[str, Any]], Any]
              | None = None, model_meta: dict[str, Any] | None = None, info: DistInfo | None = None,
              resume: bool = False, progress: bool = True, text_encoder: nn.Module | None = None) -> TrainResult:
    """LiT: train ``heads`` on cached image-tower features, with a locked or a trained text tower.

    Parameters
    ----------
    feature_fn : callable () -> LitFeatures
        Computes (or reads from the embedding cache) the locked towers' features.
    heads : nn.Module
        ``heads(image_features, text_features) -> (img_emb, txt_emb, scale, bias)``, e.g.
        :class:`analysis.models.lit.LitHeads`.
    out_dir : path
        Log and checkpoints; ``save_fn(heads, out_dir, meta)`` writes the model there (its format is
        :mod:`analysis.models.lit`'s). ``save_fn=None`` keeps only the checkpoints.
    config, info, resume, progress
        See :func:`fit`.
    text_encoder : nn.Module, optional
        A trainable text tower, ``text_encoder(list of captions) -> (B, d_text)`` features (e.g.
        :class:`analysis.models.lit.LitTextEncoder`): the captions of each batch are tokenised and encoded
        by it (``feats.text`` is not used and may be None) and its parameters with ``requires_grad`` are
        trained in place at ``config.text_lr``. ``save_fn`` should save it too (it gets only the heads).
    """
    config = config or TrainConfig()
    info = info or DistInfo()
    feats = feature_fn()
    n = len(feats.pool)
    n_text = len(feats.pool.texts) if feats.text is None else feats.text.shape[0]
    if feats.image.shape[0] != n or n_text != len(feats.pool.texts) or len(feats.labels) != n:
        raise ClipauditError(
            f"LiT features do not line up: {feats.image.shape[0]} image rows, {n} images in the caption pool, "
            f"{len(feats.labels)} labels, {n_text} text rows for {len(feats.pool.texts)} captions."
        )
    if feats.text is None and text_encoder is None:
        raise ClipauditError("LiT features have no text features (text=None): pass a text_encoder to train the "
                             "text tower, or compute the locked text tower's features.")
    image = torch.as_tensor(feats.image, dtype=torch.float32)
    meta = {"mode": "lit", **(model_meta or {})}
    if text_encoder is None:
        source = FeatureSource(image, torch.as_tensor(feats.text, dtype=torch.float32), info.device)
        model = heads
    else:
        source = FeatureSource(image, None, info.device, captions=feats.pool.texts)
        model = _LitTextPairs(heads, text_encoder)
        meta["train_text"] = getattr(text_encoder, "trainable", type(text_encoder).__name__)
    result = fit(model, source, feats.pool, feats.labels, out_dir, config=config, fingerprint=feats.fingerprint,
                 model_meta=meta, info=info, resume=resume, progress=progress)
    if info.is_main and save_fn is not None:
        save_fn(heads.cpu(), Path(out_dir), {"config": config.as_dict(), "data_fingerprint": feats.fingerprint,
                                             "steps": result.steps, "final_loss": result.loss, **meta})
    barrier(info)
    return result
