"""The interface every pipeline uses to talk to a CLIP-style model.

A :class:`ClipModel` wraps one loaded model (an ``open_clip`` model, or a model this project trained)
behind a small surface: ``preprocess``, ``tokenize``, ``encode_image``, ``encode_text``,
``logit_scale``/``logit_bias`` and ``patch_tokens``. Pipelines never touch the underlying module.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from .._checks import ClipauditError, check_device

__all__ = ["ClipModel", "ModelInfo", "state_dict_sha256", "resolve_device"]


@dataclass(frozen=True)
class ModelInfo:
    """What identifies a loaded model: its name, where its weights came from and their hash."""

    name: str
    pretrained: str | None
    source: str  # "open_clip", "open_clip-local-dir", "clipaudit-lit", ...
    weights_sha256: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pretrained": self.pretrained,
            "source": self.source,
            "weights_sha256": self.weights_sha256,
            **self.extra,
        }


def state_dict_sha256(module: torch.nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes and bytes), in key order."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def resolve_device(device: str | torch.device) -> torch.device:
    """The torch device ``device`` names (cpu, cuda, cuda:N, mps, auto), checked to exist on this machine.

    Raises
    ------
    ClipauditError
        Not a device name (lists the accepted ones), or a device this machine does not have.
    """
    if isinstance(device, torch.device):
        return device
    name = check_device(device)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= count:
            have = f"{count} CUDA device(s) (cuda:0..cuda:{count - 1})" if count else "no CUDA device"
            raise ClipauditError(f"--device {device!r}: this machine has {have} visible to torch "
                                 f"{torch.__version__}. Use --device cpu or auto.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ClipauditError(f"--device {device!r}: Apple MPS is not available here. Use --device cpu or auto.")
    return torch.device(name)


class ClipModel(ABC):
    """A dual-encoder image/text model.

    Attributes
    ----------
    info : ModelInfo
        Name, weights source and weights hash; the cache keys on it.
    preprocess : callable
        PIL image -> float tensor of shape (3, H, W): the model's own evaluation transform.
    device : torch.device
    """

    info: ModelInfo
    preprocess: Callable[[Image.Image], torch.Tensor]
    device: torch.device

    @property
    def name(self) -> str:
        return self.info.name

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> Any:
        """Texts -> whatever :meth:`encode_text` takes (token ids, or a batch encoding)."""

    @abstractmethod
    def encode_image(self, images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Preprocessed images (B, 3, H, W) -> embeddings (B, D), L2-normalised by default."""

    @abstractmethod
    def encode_text(self, tokens: Any, *, normalize: bool = True) -> torch.Tensor:
        """Tokenised texts -> embeddings (B, D), L2-normalised by default."""

    @abstractmethod
    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """Spatial tokens of the image tower, shape (B, h*w, d), row-major over the (h, w) grid.

        ViTs: output of the last transformer block, before the final norm, prefix (CLS) tokens dropped.
        CNN towers: the final feature map, flattened.
        """

    @property
    @abstractmethod
    def logit_scale(self) -> float:
        """Multiplier of cosine similarities (exp of the learned log-scale)."""

    @property
    def logit_bias(self) -> float | None:
        """Additive logit bias (SigLIP-style models), else None."""
        return None

    @property
    def embed_dim(self) -> int:
        with torch.no_grad():
            return int(self.encode_text(self.tokenize(["a"])).shape[-1])

    def encode_texts(self, texts: Sequence[str], *, normalize: bool = True) -> torch.Tensor:
        """Convenience: tokenise and encode a list of strings."""
        with torch.no_grad():
            return self.encode_text(self.tokenize(list(texts)), normalize=normalize)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.info.name!r}, pretrained={self.info.pretrained!r})"
