"""A LiT model as a :class:`~analysis.models.base.ClipModel`: shared frozen towers + own heads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

import torch

from ..._checks import ClipauditError
from ..base import ClipModel, ModelInfo, state_dict_sha256
from .heads import LitHeads
from .text_encoder import LitTextEncoder
from .towers import LITE_MEAN, LITE_STD, LitTowers, get_towers, lit_feature_key, lit_transform

__all__ = ["LitClipModel", "build_lit_model", "KIND"]

KIND = "lit"


class LitClipModel(ClipModel):
    """A :class:`ClipModel` = shared frozen :class:`LitTowers` + own :class:`LitHeads`."""

    def __init__(self, towers: LitTowers, heads: LitHeads, info: ModelInfo, *, image_size: int = 224,
                 mean: Sequence[float] = LITE_MEAN, std: Sequence[float] = LITE_STD) -> None:
        self.towers = towers
        self.device = towers.device
        self.heads = heads.to(self.device).eval()
        self.image_size = image_size
        self.preprocess = lit_transform(image_size, mean=mean, std=std)
        self.info = info

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.towers.tokenize(texts)

    def encode_image(self, images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        return self.heads.encode_image(self.towers.image_features(images), normalize=normalize)

    def encode_text(self, tokens: Mapping[str, torch.Tensor], *, normalize: bool = True) -> torch.Tensor:
        return self.heads.encode_text(self.towers.text_features(tokens), normalize=normalize)

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Final EfficientNet feature map, flattened row-major: (B, h*w, 1280); (B, 49, 1280) at 224 px."""
        return self.towers.image_feature_map(images).flatten(2).transpose(1, 2)

    @property
    def logit_scale(self) -> float:
        return float(self.heads.scale().detach())

    @property
    def logit_bias(self) -> float | None:
        bias = self.heads.logit_bias
        return None if bias is None else float(bias.detach())

    @property
    def embed_dim(self) -> int:
        return self.heads.embed_dim


def build_lit_model(heads: LitHeads, *, image_size: int = 224, device: str | torch.device = "cpu",
                    name: str = "lit", pretrained: str | None = None,
                    text_encoder: LitTextEncoder | None = None) -> LitClipModel:
    """Wrap in-memory heads with the shared towers as a :class:`LitClipModel` (nothing is read or written).

    ``info.weights_sha256`` hashes the heads' state dict together with :func:`lit_feature_key`, so any
    change to what the embeddings depend on changes the cache key. ``text_encoder``: a fine-tuned text
    tower used instead of the frozen one (frozen in place; the image tower stays shared).
    """
    if not isinstance(heads, LitHeads):
        raise ClipauditError(f"heads must be a LitHeads module, got {type(heads).__name__}.")
    towers = get_towers(device)
    if text_encoder is not None:
        towers = towers.with_text_encoder(text_encoder)
    feature_key = lit_feature_key(image_size, text_tuned=towers.text_tuned)
    heads_sha = state_dict_sha256(heads)
    key = json.dumps({"heads": heads_sha, **feature_key}, sort_keys=True)
    info = ModelInfo(
        name=name, pretrained=pretrained, source=f"clipaudit-{KIND}",
        weights_sha256=hashlib.sha256(key.encode()).hexdigest(),
        extra={"kind": KIND, "heads_sha256": heads_sha, **heads.config(), "image_size": image_size,
               **({"text_tuned": towers.text_tuned} if towers.text_tuned else {})},
    )
    return LitClipModel(towers, heads, info, image_size=image_size)
