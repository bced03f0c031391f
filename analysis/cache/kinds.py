"""Feature kinds: every encoder the package runs, registered with its cache key and its batch encoder.

A :class:`FeatureKind` says what one cached row is and how a batch of rows is computed:

- ``source="dataset"``: one row per image of a dataset. The cache decodes each image once
  (``dataset.load_image``), ``prepare`` turns the decoded image into the encoder's input, ``encode`` runs a
  batch of them. Rows are stored per image of the *root* dataset, so subsets share them.
- ``source="items"``: one row per item of a list the caller passes (texts, prompt images).

The encoder object is a :class:`~analysis.models.ClipModel` or the LiT towers; ``variant`` is what else the
rows depend on (a perturbation, an image size). Kinds with equal ``prepare_id`` share one prepared input
per image, so every perturbation of an image is encoded from one decoded, preprocessed tensor.

Registered kinds (:data:`KINDS`): ``image`` (an image view, per perturbation), ``patch-tokens``,
``pixels`` (images squashed to the model's input size, for drawing), ``text``, ``text-raw``
(unnormalised), ``visual-prompt`` (concept prompt images), ``lit-image`` and ``lit-text`` (locked LiT
tower features).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from .._registry import Registry
from ..data.perturb import Perturbation

__all__ = ["FeatureKind", "KINDS", "transform_key", "encoder_name", "input_size", "squash"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass(frozen=True)
class FeatureKind:
    """How one kind of cached row is keyed and computed.

    Attributes
    ----------
    name : str
        Namespace of its entries on disk.
    source : {"dataset", "items"}
        Rows are the images of a dataset (decoded by the cache) or the items of a list.
    key : callable (encoder, variant) -> dict
        Everything the rows depend on besides the data (model identity, transform, perturbation...).
    prepare : callable (encoder, variant) -> (item -> input)
        Turns a decoded image (or a list item) into the encoder's input for one row.
    encode : callable (encoder, list of inputs, variant) -> ndarray (B, ...)
        One batch through the encoder, as float32 (or the stored dtype).
    row_shape : callable (encoder, variant) -> tuple
        Shape of one row, for a batch in which no row could be computed.
    prepare_id : callable (encoder, variant) -> hashable
        Kinds with equal ids share one prepared input per image.
    dtype : str, optional
        Fixed storage dtype (None: the cache's ``dtype``).
    normalize : bool
        Rows are L2-normalised when read.
    check_finite : bool
        A NaN/Inf row is an error (or, for images with ``skip_bad``, a skipped image).
    what : str
        What a row is, for messages.
    counter : str
        :class:`~analysis.cache.CacheStats` field that also counts encoded rows ("" for none).
    """

    name: str
    source: str
    key: Callable[[Any, Any], dict[str, Any]]
    prepare: Callable[[Any, Any], Callable[[Any], Any]]
    encode: Callable[[Any, list[Any], Any], np.ndarray]
    row_shape: Callable[[Any, Any], tuple[int, ...]]
    prepare_id: Callable[[Any, Any], Hashable]
    dtype: str | None = None
    normalize: bool = False
    check_finite: bool = True
    what: str = "embedding"
    counter: str = ""


KINDS: Registry[FeatureKind] = Registry("feature kind")


def _register(kind: FeatureKind, help: str) -> FeatureKind:
    return KINDS.register(kind.name, kind, help)


# ---------------------------------------------------------------------------------------------- helpers
def transform_key(model: Any) -> str:
    """Stable text of the model's image transform (memory addresses of functions removed)."""
    return _ADDRESS.sub("", repr(model.preprocess))


def encoder_name(encoder: Any) -> str:
    """``name`` (``name:pretrained``) of a model, for messages."""
    info = getattr(encoder, "info", None)
    if info is None:
        return type(encoder).__name__
    return f"{info.name}:{info.pretrained}" if info.pretrained else str(info.name)


def _model_key(model: Any) -> dict[str, Any]:
    return {"model": model.info.as_dict()}


def input_size(model: Any) -> tuple[int, int]:
    """(H, W) of the tensors the model's preprocess produces."""
    shape = model.preprocess(Image.new("RGB", (16, 16))).shape[-2:]
    return int(shape[0]), int(shape[1])


def squash(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """An image resized (bicubic, no crop) to ``size = (H, W)``, as uint8 RGB (H, W, 3)."""
    height, width = size
    return np.asarray(image.convert("RGB").resize((width, height), Image.BICUBIC), dtype=np.uint8)


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().cpu().numpy()


def _stack(batch: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(batch)


# ---------------------------------------------------------------------------------------------- CLIP models
def _encode_view(model: Any, batch: list[torch.Tensor], view: Perturbation) -> np.ndarray:
    with torch.no_grad():
        return _numpy(model.encode_image(view(_stack(batch)), normalize=True))


_register(FeatureKind(
    name="image", source="dataset",
    key=lambda m, view: {**_model_key(m), "transform": transform_key(m), "perturbation": view.name},
    prepare=lambda m, view: m.preprocess,
    encode=_encode_view,
    row_shape=lambda m, view: (int(m.embed_dim),),
    prepare_id=lambda m, view: ("preprocess", id(m)),
    normalize=True, what="image embedding", counter="images_encoded",
), "whole-image embedding of one view (perturbation), L2-normalised")


def _squashed_tensor(m: Any) -> Callable[[Image.Image], torch.Tensor]:
    size = input_size(m)
    return lambda im: m.preprocess(Image.fromarray(squash(im, size)))


def _encode_tokens(model: Any, batch: list[torch.Tensor], _variant: Any) -> np.ndarray:
    with torch.no_grad():
        return _numpy(model.patch_tokens(_stack(batch)))


def _token_shape(model: Any, _variant: Any) -> tuple[int, ...]:
    h, w = input_size(model)
    with torch.no_grad():
        return tuple(model.patch_tokens(torch.zeros(1, 3, h, w)).shape[1:])


_register(FeatureKind(
    name="patch-tokens", source="dataset",
    key=lambda m, _v: {**_model_key(m), "transform": transform_key(m), "input": "squashed, no crop"},
    prepare=lambda m, _v: _squashed_tensor(m),
    encode=_encode_tokens, row_shape=_token_shape,
    prepare_id=lambda m, _v: ("squashed", id(m)),
    dtype="float32", what="patch tokens",
), "spatial tokens of the image tower (h*w, d) of the image squashed to the input size")


def _pixels_prepare(m: Any, _v: Any) -> Callable[[Image.Image], np.ndarray]:
    size = input_size(m)
    return lambda im: squash(im, size)


_register(FeatureKind(
    name="pixels", source="dataset",
    key=lambda m, _v: {"size": list(input_size(m)), "resize": "bicubic, no crop", "mode": "RGB"},
    prepare=_pixels_prepare,
    encode=lambda _m, batch, _v: np.stack(batch),
    row_shape=lambda m, _v: (*input_size(m), 3),
    prepare_id=lambda m, _v: ("pixels", id(m)),
    dtype="uint8", check_finite=False, what="pixels",
), "uint8 RGB image squashed to the model's input size (what patch tokens and visual prompts see)")


def _encode_texts(normalize: bool) -> Callable[[Any, list[str], Any], np.ndarray]:
    def encode(model: Any, batch: list[str], _v: Any) -> np.ndarray:
        with torch.no_grad():
            return _numpy(model.encode_text(model.tokenize(list(batch)), normalize=normalize))

    return encode


def _identity(_m: Any, _v: Any) -> Callable[[Any], Any]:
    return lambda x: x


_register(FeatureKind(
    name="text", source="items", key=lambda m, _v: _model_key(m), prepare=_identity,
    encode=_encode_texts(True), row_shape=lambda m, _v: (int(m.embed_dim),),
    prepare_id=lambda m, _v: ("text", id(m)), normalize=True, what="text embedding", counter="texts_encoded",
), "text embedding, L2-normalised")
_register(FeatureKind(
    name="text-raw", source="items", key=lambda m, _v: {**_model_key(m), "normalize": False}, prepare=_identity,
    encode=_encode_texts(False), row_shape=lambda m, _v: (int(m.embed_dim),),
    prepare_id=lambda m, _v: ("text", id(m)), dtype="float32", what="text embedding", counter="texts_encoded",
), "text embedding before normalisation (e.g. for norm-based pruning), float32")


def _prompt_prepare(m: Any, _v: Any) -> Callable[[np.ndarray], torch.Tensor]:
    return lambda variants: torch.stack([m.preprocess(Image.fromarray(np.asarray(a))) for a in variants])


def _encode_prompts(model: Any, batch: list[torch.Tensor], _v: Any) -> np.ndarray:
    x = _stack(batch)  # (B, V, 3, H, W): V prompt variants per concept
    with torch.no_grad():
        emb = _numpy(model.encode_image(x.flatten(0, 1), normalize=True))
    return emb.reshape(x.shape[0], x.shape[1], -1).mean(axis=1)


_register(FeatureKind(
    name="visual-prompt", source="items",
    key=lambda m, _v: {**_model_key(m), "transform": transform_key(m)},
    prepare=_prompt_prepare, encode=_encode_prompts, row_shape=lambda m, _v: (int(m.embed_dim),),
    prepare_id=lambda m, _v: ("prompt", id(m)), dtype="float32", what="visual-prompt embedding",
), "concept prompt images (V variants, uint8): each variant L2-normalised, the V averaged (not renormalised)")


# ---------------------------------------------------------------------------------------------- LiT towers
def _lit_prepare(_towers: Any, image_size: int) -> Callable[[Image.Image], torch.Tensor]:
    from ..models.lit import lit_transform

    return lit_transform(int(image_size))


def _lit_image_shape(_towers: Any, _size: Any) -> tuple[int, ...]:
    from ..models.lit import IMAGE_FEATURE_DIM

    return (IMAGE_FEATURE_DIM,)


def _lit_text_shape(_towers: Any, _v: Any) -> tuple[int, ...]:
    from ..models.lit import TEXT_FEATURE_DIM

    return (TEXT_FEATURE_DIM,)


_register(FeatureKind(
    name="lit-image", source="dataset",
    key=lambda t, size: {"towers": t.fingerprint(), "image_size": int(size)},
    prepare=_lit_prepare,
    encode=lambda t, batch, _size: _numpy(t.image_features(_stack(batch))),
    row_shape=_lit_image_shape, prepare_id=lambda t, size: ("lit", id(t), int(size)),
    dtype="float32", what="LiT image-tower feature",
), "locked LiT image-tower features (pooled EfficientNet-Lite0 map), float32")
_register(FeatureKind(
    name="lit-text", source="items", key=lambda t, _v: {"towers": t.fingerprint()}, prepare=_identity,
    encode=lambda t, batch, _v: _numpy(t.text_features(list(batch))),
    row_shape=_lit_text_shape, prepare_id=lambda t, _v: ("lit-text", id(t)),
    dtype="float32", what="LiT text-tower feature",
), "locked LiT text-tower features (MiniLM sentence embeddings), float32")
