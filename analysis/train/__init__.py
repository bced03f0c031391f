"""Training CLIP-style models: losses (InfoNCE, SigLIP), captions, the loop, multi-process helpers."""

from .captions import CaptionPool, caption_pool, class_captions
from .loop import LitFeatures, TrainConfig, TrainResult, train_lit, train_open_clip
from .losses import LOSSES, InfoNCELoss, LogitScale, SigLIPLoss, create_loss, infonce_loss, siglip_loss

__all__ = [
    "CaptionPool", "caption_pool", "class_captions", "LOSSES", "InfoNCELoss", "LogitScale", "SigLIPLoss",
    "create_loss", "infonce_loss", "siglip_loss", "LitFeatures", "TrainConfig", "TrainResult",
    "train_lit", "train_open_clip",
]
