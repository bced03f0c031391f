"""The trainable part of a LiT model: :class:`LitHeads` (two linear projections, temperature, SigLIP bias)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import nn

from ..._checks import check_choice, check_positive_int
from .towers import IMAGE_FEATURE_DIM, TEXT_FEATURE_DIM

__all__ = ["LitHeads", "LitOutput", "LOSSES", "MAX_LOGIT_SCALE"]

LOSSES = ("infonce", "siglip")
MAX_LOGIT_SCALE = 100.0  # the issue: scale clamped to <= 100 (as open_clip)


class LitOutput(NamedTuple):
    """What :meth:`LitHeads.forward` returns (unpacks like open_clip's ``CLIP.forward``)."""

    image: torch.Tensor  # (B, D) L2-normalised
    text: torch.Tensor  # (B, D) L2-normalised
    logit_scale: torch.Tensor  # scalar, exp of the learned log-scale
    logit_bias: torch.Tensor | None  # scalar (SigLIP) or None


class LitHeads(nn.Module):
    """Trainable part of a LiT model: two linear projections and the temperature (and SigLIP bias).

    Parameters
    ----------
    embed_dim : int, default=256
        Shared embedding size D.
    loss : {"infonce", "siglip"}, default="infonce"
        Sets the initial temperature and whether there is a bias: InfoNCE ``logit_scale = log(1/0.07)``,
        no bias (CLIP); SigLIP ``logit_scale = log(10)``, ``logit_bias = -10`` (Zhai et al., 2023).
    proj_bias : bool, default=True
        Projections with a bias term (the tower features are not centred: pooled ReLU6 outputs are >= 0).
    image_dim, text_dim : int, default=1280, 384
        Tower feature sizes.

    Examples
    --------
    >>> heads = LitHeads(embed_dim=8)
    >>> out = heads(torch.randn(4, 1280), torch.randn(4, 384))
    >>> tuple(out.image.shape), out.logit_bias is None
    ((4, 8), True)
    """

    def __init__(self, embed_dim: int = 256, *, loss: str = "infonce", proj_bias: bool = True,
                 image_dim: int = IMAGE_FEATURE_DIM, text_dim: int = TEXT_FEATURE_DIM) -> None:
        super().__init__()
        check_positive_int("embed_dim", embed_dim)
        check_positive_int("image_dim", image_dim)
        check_positive_int("text_dim", text_dim)
        self.loss = check_choice("loss", loss, LOSSES)
        self.embed_dim, self.image_dim, self.text_dim = embed_dim, image_dim, text_dim
        self.proj_bias = bool(proj_bias)
        self.image_proj = nn.Linear(image_dim, embed_dim, bias=proj_bias)
        self.text_proj = nn.Linear(text_dim, embed_dim, bias=proj_bias)
        init_scale = math.log(10.0) if loss == "siglip" else math.log(1 / 0.07)
        self.logit_scale = nn.Parameter(torch.tensor(init_scale))
        self.logit_bias = nn.Parameter(torch.tensor(-10.0)) if loss == "siglip" else None

    def config(self) -> dict[str, Any]:
        """Architecture as JSON-able data (what :func:`save_lit_model` writes and ``from_config`` reads)."""
        return {"embed_dim": self.embed_dim, "loss": self.loss, "proj_bias": self.proj_bias,
                "image_dim": self.image_dim, "text_dim": self.text_dim}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LitHeads:
        return cls(int(cfg.get("embed_dim", 256)), loss=str(cfg.get("loss", "infonce")),
                   proj_bias=bool(cfg.get("proj_bias", True)),
                   image_dim=int(cfg.get("image_dim", IMAGE_FEATURE_DIM)),
                   text_dim=int(cfg.get("text_dim", TEXT_FEATURE_DIM)))

    def encode_image(self, image_features: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Tower image features (B, image_dim) -> embeddings (B, D)."""
        x = self.image_proj(image_features)
        return nn.functional.normalize(x, dim=-1) if normalize else x

    def encode_text(self, text_features: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Tower text features (B, text_dim) -> embeddings (B, D)."""
        x = self.text_proj(text_features)
        return nn.functional.normalize(x, dim=-1) if normalize else x

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> LitOutput:
        """Normalised embeddings of both sides, the scale ``exp(min(t', log 100))`` and the bias (or None)."""
        return LitOutput(self.encode_image(image_features), self.encode_text(text_features),
                         self.scale(), self.logit_bias)

    def scale(self) -> torch.Tensor:
        """``exp`` of the log-scale parameter, clamped to at most 100 (the trainer clamps the parameter)."""
        return self.logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()
