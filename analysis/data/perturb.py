"""Named image perturbations, applied to preprocessed image batches (after the model's own transform).

Names are data: ``hflip``, ``vflip``, ``rot:DEG`` (rotation in degrees, counter-clockwise), ``crop:F``
(centre crop keeping fraction F of each side, resized back), ``none``. A perturbation's canonical name
is part of the embedding-cache key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .._checks import ClipauditError

__all__ = ["Perturbation", "get_perturbation", "PERTURBATION_HELP"]

PERTURBATION_HELP = (
    "none | hflip | vflip | rot:DEG (e.g. rot:15, bilinear, zero fill) | crop:F (centre crop keeping "
    "fraction F in (0,1] of each side, resized back, e.g. crop:0.9)"
)


@dataclass(frozen=True)
class Perturbation:
    """A deterministic batch transform with a canonical name."""

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images if self.name == "none" else self.fn(images)


def _rotate(deg: float) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: TF.rotate(x, deg, interpolation=InterpolationMode.BILINEAR)


def _crop(frac: float) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ch, cw = max(1, round(h * frac)), max(1, round(w * frac))
        return TF.resize(TF.center_crop(x, [ch, cw]), [h, w], interpolation=InterpolationMode.BICUBIC,
                         antialias=True)

    return fn


def get_perturbation(spec: str | Perturbation) -> Perturbation:
    """Parse a perturbation name such as ``hflip`` or ``rot:15``."""
    if isinstance(spec, Perturbation):
        return spec
    spec = str(spec).strip().lower()
    if spec in ("none", ""):
        return Perturbation("none", lambda x: x)
    if spec == "hflip":
        return Perturbation("hflip", lambda x: torch.flip(x, dims=[-1]))
    if spec == "vflip":
        return Perturbation("vflip", lambda x: torch.flip(x, dims=[-2]))
    kind, _, arg = spec.partition(":")
    try:
        value = float(arg)
    except ValueError:
        value = None
    if kind == "rot" and value is not None:
        return Perturbation(f"rot:{value:g}", _rotate(value))
    if kind == "crop" and value is not None and 0 < value <= 1:
        return Perturbation(f"crop:{value:g}", _crop(value))
    raise ClipauditError(f"Unknown perturbation {spec!r}. Accepted: {PERTURBATION_HELP}.")
