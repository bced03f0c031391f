r"""Contrastive losses for CLIP-style training: symmetric InfoNCE (CLIP) and pairwise sigmoid (SigLIP).

Both losses reuse ``open_clip.loss`` (:class:`open_clip.loss.ClipLoss`, :class:`open_clip.loss.SigLipLoss`),
which also implements the multi-process versions. Inputs are **L2-normalised** embeddings (the
encoders/heads normalise; the losses do not).

InfoNCE [1]_, for a batch of :math:`n` pairs with logits :math:`L = s\,I T^\top`:

.. math::
    \mathcal{L} = \tfrac12\Big(-\tfrac1n\sum_i \log \operatorname{softmax}(L_{i\cdot})_i
                  -\tfrac1n\sum_j \log \operatorname{softmax}(L_{\cdot j})_j\Big)

SigLIP [2]_, with :math:`L = t\,I T^\top + b` and :math:`z_{ij} = +1` if :math:`i=j` else :math:`-1`:

.. math::
    \mathcal{L} = -\tfrac1n \sum_{i,j} \log \sigma(z_{ij} L_{ij})

Multi-positive InfoNCE (``multi_positive=True``, not in [1]_): with class-captioned data two images of the
same class in one batch get interchangeable captions, so treating the other same-class pairs as
negatives pushes apart things that should be close. With class labels :math:`c`, the target of row
:math:`i` is uniform over :math:`\{j : c_j = c_i\}` (soft cross-entropy); images without a label
(``-1``) match only their own caption. The target matrix is symmetric, so both directions use it.

References
----------
.. [1] Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", 2021.
.. [2] Zhai et al., "Sigmoid Loss for Language Image Pre-Training", 2023.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss
from torch import nn

from .._checks import ClipauditError, check_choice
from .config import LOSSES  # loss names accepted by create_loss and `clipaudit train --loss`

__all__ = [
    "LOSSES", "CLIP_INIT_SCALE", "SIGLIP_INIT_SCALE", "SIGLIP_INIT_BIAS", "MAX_LOGIT_SCALE",
    "LogitScale", "InfoNCELoss", "SigLIPLoss", "create_loss", "infonce_loss", "siglip_loss",
    "multi_positive_targets", "clamp_logit_scale_",
]

CLIP_INIT_SCALE = 1 / 0.07
SIGLIP_INIT_SCALE = 10.0
SIGLIP_INIT_BIAS = -10.0
MAX_LOGIT_SCALE = 100.0


def clamp_logit_scale_(log_scale: torch.Tensor, max_scale: float = MAX_LOGIT_SCALE) -> torch.Tensor:
    """Clamp a log-scale parameter in place to ``[0, log(max_scale)]`` (as open_clip after each step)."""
    with torch.no_grad():
        log_scale.clamp_(0.0, math.log(max_scale))
    return log_scale


class LogitScale(nn.Module):
    """Learnable temperature :math:`s = e^{t'}` (and, for SigLIP, a learnable bias :math:`b`).

    The scale is clamped **both ways**: :meth:`forward` returns ``exp(min(t', log max_scale))`` so the
    scale used in a loss never exceeds ``max_scale`` even between optimizer steps, and the trainer
    calls :meth:`clamp_` after each optimizer step (as open_clip does) so the stored parameter stays in
    ``[0, log max_scale]`` and its gradient is not stuck at zero above the bound.

    Parameters
    ----------
    init_scale : float, default=1/0.07
        Initial scale (CLIP: 1/0.07; SigLIP: 10).
    init_bias : float, optional
        Initial bias (SigLIP: -10). None = no bias.
    max_scale : float, default=100
    """

    def __init__(self, init_scale: float = CLIP_INIT_SCALE, *, init_bias: float | None = None,
                 max_scale: float = MAX_LOGIT_SCALE) -> None:
        super().__init__()
        if not (0 < init_scale <= max_scale):
            raise ClipauditError(f"init_scale must be in (0, max_scale={max_scale}], got {init_scale!r}.")
        self.max_scale = float(max_scale)
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale), dtype=torch.float32))
        self.bias = None if init_bias is None else nn.Parameter(torch.tensor(float(init_bias)))

    def forward(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(self.max_scale)).exp()

    def clamp_(self) -> None:
        clamp_logit_scale_(self.log_scale, self.max_scale)


def multi_positive_targets(row_labels: torch.Tensor, col_labels: torch.Tensor,
                           row_offset: int = 0, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Soft targets: row ``i`` uniform over columns with the same class label.

    Parameters
    ----------
    row_labels : Tensor of shape (n_rows,), int
        Class labels of the rows (-1 = unlabelled).
    col_labels : Tensor of shape (n_cols,), int
        Class labels of the columns; row ``i`` is pair ``row_offset + i`` among the columns.
    row_offset : int, default=0

    Returns
    -------
    Tensor of shape (n_rows, n_cols), rows summing to 1.
    """
    own = torch.zeros(len(row_labels), len(col_labels), dtype=torch.bool, device=row_labels.device)
    idx = torch.arange(len(row_labels), device=row_labels.device)
    own[idx, idx + row_offset] = True
    same = (row_labels[:, None] == col_labels[None, :]) & (row_labels[:, None] >= 0)
    pos = (same | own).to(dtype)
    return pos / pos.sum(dim=1, keepdim=True)


class InfoNCELoss(ClipLoss):
    """Symmetric InfoNCE (open_clip ``ClipLoss``) with an optional multi-positive mode.

    Across processes it gathers embeddings with gradients and computes the local rows only (open_clip's
    ``--gather-with-grad --local-loss``); averaging the per-rank losses (and DDP's averaging of
    gradients) gives the loss and gradients of the global batch.

    Parameters
    ----------
    multi_positive : bool, default=False
        Use soft targets over same-class pairs (see the module docstring); needs ``class_labels``.
    rank, world_size : int
        Process rank and count (1 = single process).
    """

    def __init__(self, *, multi_positive: bool = False, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(local_loss=True, gather_with_grad=True, rank=rank, world_size=world_size)
        self.multi_positive = multi_positive

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                ) -> torch.Tensor:
        if not self.multi_positive:
            return super().forward(image_features, text_features, logit_scale, logit_bias)
        if class_labels is None:
            raise ClipauditError("multi_positive InfoNCE needs class_labels (a class per pair, -1 = none).")
        per_image, per_text = self.get_logits(image_features, text_features, logit_scale, logit_bias)
        class_labels = class_labels.to(image_features.device)
        all_labels, offset = class_labels, 0
        if self.world_size > 1:
            gathered = [torch.empty_like(class_labels) for _ in range(self.world_size)]
            torch.distributed.all_gather(gathered, class_labels)
            all_labels, offset = torch.cat(gathered), self.rank * len(class_labels)
        targets = multi_positive_targets(class_labels, all_labels, offset, dtype=per_image.dtype)
        return (F.cross_entropy(per_image, targets) + F.cross_entropy(per_text, targets)) / 2


class SigLIPLoss(SigLipLoss):
    """Pairwise sigmoid loss (open_clip ``SigLipLoss``; across processes: all-gather of texts with gradients).

    Each rank sums over its local images against all texts and divides by the local batch size, so the
    mean over ranks equals :math:`-\\tfrac1N\\sum_{i,j}\\log\\sigma(z_{ij}L_{ij})` on the global batch.
    """

    def __init__(self, *, rank: int = 0, world_size: int = 1) -> None:
        super().__init__(rank=rank, world_size=world_size, dist_impl="gather")

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor | None = None, class_labels: torch.Tensor | None = None,
                ) -> torch.Tensor:
        if logit_bias is None:
            raise ClipauditError("SigLIP loss needs a logit bias (init -10); the model has none.")
        return super().forward(image_features, text_features, logit_scale, logit_bias)


def create_loss(name: str, *, multi_positive: bool = False, rank: int = 0, world_size: int = 1) -> nn.Module:
    """Build a loss by name (``"infonce"`` or ``"siglip"``).

    The returned module is called as ``loss(image_features, text_features, logit_scale, logit_bias=None,
    class_labels=None)``.

    Raises
    ------
    ClipauditError
        Unknown name, or ``multi_positive`` with SigLIP (not supported).
    """
    check_choice("loss", name, LOSSES)
    if name == "siglip":
        if multi_positive:
            raise ClipauditError("multi_positive is only available for loss='infonce', got loss='siglip'.")
        return SigLIPLoss(rank=rank, world_size=world_size)
    return InfoNCELoss(multi_positive=multi_positive, rank=rank, world_size=world_size)


def infonce_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float,
                 *, class_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Single-process symmetric InfoNCE on L2-normalised embeddings of shape (n, d).

    With ``class_labels`` (shape (n,), -1 = unlabelled), same-class pairs are positives (multi-positive).
    """
    loss = InfoNCELoss(multi_positive=class_labels is not None)
    scale = torch.as_tensor(logit_scale, dtype=image_features.dtype)
    return loss(image_features, text_features, scale, class_labels=class_labels)


def siglip_loss(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float) -> torch.Tensor:
    """Single-process SigLIP loss on L2-normalised embeddings of shape (n, d)."""
    dtype = image_features.dtype
    scale, bias = torch.as_tensor(logit_scale, dtype=dtype), torch.as_tensor(logit_bias, dtype=dtype)
    return SigLIPLoss()(image_features, text_features, scale, bias)
