"""Adapter for models that ``open_clip`` builds: name + pretrained tag, local checkpoint, ``local-dir:``."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._checks import ClipauditError, close_matches
from .base import ClipModel, ModelInfo, resolve_device, state_dict_sha256

__all__ = ["OpenClipModel", "load_open_clip", "describe_state_dict_mismatch"]

log = logging.getLogger(__name__)
LOCAL_DIR = "local-dir:"


class OpenClipModel(ClipModel):
    """A :class:`ClipModel` over an ``open_clip`` ``CLIP``/``CustomTextCLIP`` module."""

    def __init__(self, module: torch.nn.Module, preprocess: Any, tokenizer: Any, info: ModelInfo,
                 device: torch.device) -> None:
        self.module = module.eval().to(device)
        self.preprocess = preprocess
        self._tokenizer = tokenizer
        self.info = info
        self.device = device

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self._tokenizer(list(texts))

    def encode_image(self, images: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        return self.module.encode_image(images.to(self.device), normalize=normalize).float()

    def encode_text(self, tokens: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        return self.module.encode_text(tokens.to(self.device), normalize=normalize).float()

    @property
    def logit_scale(self) -> float:
        return float(self.module.logit_scale.detach().exp().reshape(-1)[0])

    @property
    def logit_bias(self) -> float | None:
        bias = getattr(self.module, "logit_bias", None)
        return None if bias is None else float(bias.detach().reshape(-1)[0])

    def patch_tokens(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.module.visual
        images = images.to(self.device)
        captured: dict[str, torch.Tensor] = {}
        if hasattr(visual, "transformer"):  # open_clip VisionTransformer
            layer = visual.transformer.resblocks[-1]
            n_prefix = 1 if getattr(visual, "class_embedding", None) is not None else 0
            n_prefix += int(getattr(visual, "num_registers", 0) or 0)
        elif hasattr(visual, "layer4"):  # open_clip ModifiedResNet
            layer, n_prefix = visual.layer4, 0
        elif hasattr(visual, "trunk"):  # timm tower
            return _timm_tokens(visual.trunk, images)
        else:
            raise ClipauditError(
                f"Model {self.info.name!r}: cannot find the image tower's last block to take patch tokens from."
            )
        handle = layer.register_forward_hook(lambda _m, _i, out: captured.__setitem__("x", out))
        try:
            with torch.no_grad():
                self.module.encode_image(images)
        finally:
            handle.remove()
        x = captured["x"]
        if x.ndim == 4:  # (B, C, h, w) feature map
            return x.flatten(2).transpose(1, 2).float()
        return x[:, n_prefix:, :].float()


def _timm_tokens(trunk: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        x = trunk.forward_features(images)
    if x.ndim == 4:
        return x.flatten(2).transpose(1, 2).float()
    n_prefix = int(getattr(trunk, "num_prefix_tokens", 1))
    return x[:, n_prefix:, :].float()


def describe_state_dict_mismatch(model: torch.nn.Module, state_dict: dict[str, torch.Tensor]) -> str:
    """A short human summary of why ``state_dict`` does not fit ``model`` ('' if it fits)."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and hasattr(state_dict[k], "shape") and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {'; '.join(items[:3])}{more}")
    return ". ".join(parts)


#: What a weights file must be, said by every error about an unreadable one.
WEIGHTS_FORMATS = ("a safetensors file or a checkpoint that torch.load(weights_only=True) can read "
                   "(tensors only, no pickled Python objects)")


def _read_state_dict(path: str) -> tuple[dict[str, Any] | None, str]:
    """``(state_dict, "")`` read weights-only, or ``(None, why)`` when the file cannot be read that way."""
    import open_clip

    try:
        return open_clip.factory.load_state_dict(path, weights_only=True), ""
    except Exception as err:  # noqa: BLE001 - summarised in one line by the caller
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found:
            return None, f"{type(err).__name__}: it holds the pickled Python object {found.group(1)}"
        return None, f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:200]}"


def _unreadable(path: str, why: str) -> ClipauditError:
    return ClipauditError(f"Weights file {path!r} cannot be loaded safely ({why}): it must be {WEIGHTS_FORMATS}. "
                          f"Re-save its state_dict with safetensors.torch.save_file.")


def _load_weights_file(module: torch.nn.Module, path: str, model_desc: str) -> None:
    import open_clip

    try:
        open_clip.load_checkpoint(module, path, strict=True, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with a clear message
        state, why = _read_state_dict(path)
        if state is None:
            raise _unreadable(path, why) from None
        detail = describe_state_dict_mismatch(module, state)
        raise ClipauditError(
            f"Checkpoint {path!r} does not match model config {model_desc!r}: "
            f"{detail or str(err).splitlines()[0]}. Pass the --model config the checkpoint was trained with."
        ) from None


def load_open_clip(model: str, pretrained: str | None = None, *, device: str | torch.device = "cpu",
                   cache_dir: str | None = None) -> OpenClipModel:
    """Build an open_clip model from a name + tag, a name + checkpoint file, or ``local-dir:PATH``."""
    import open_clip

    device = resolve_device(device)
    if model.startswith(LOCAL_DIR):
        return _load_local_dir(model, device)

    name = model.replace("/", "-")
    if name not in open_clip.list_models():
        near = close_matches(name, open_clip.list_models())
        hint = f" Did you mean {', '.join(map(repr, near))}?" if near else ""
        raise ClipauditError(
            f"Unknown model {model!r}: not an open_clip config, a clipaudit model or a 'local-dir:' folder."
            f"{hint} See `clipaudit models`."
        )
    if pretrained and os.path.isfile(pretrained):
        module, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device="cpu")
        _load_weights_file(module, pretrained, name)
        source, tag = "open_clip-checkpoint", str(Path(pretrained).resolve())
    elif pretrained:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if not open_clip.is_pretrained_cfg(name, pretrained):
            if os.sep in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors")):
                raise ClipauditError(f"--pretrained: checkpoint file {pretrained!r} does not exist.")
            shown = ", ".join(tags) if tags else "(none: pass a checkpoint file instead)"
            raise ClipauditError(
                f"Unknown pretrained tag {pretrained!r} for model {name!r}. Known tags: {shown}."
            )
        try:
            module, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device="cpu", cache_dir=cache_dir
            )
        except Exception as err:  # noqa: BLE001
            raise ClipauditError(
                f"Could not load pretrained weights {name}:{pretrained} ({type(err).__name__}: "
                f"{str(err).splitlines()[0][:300]}). Without network access, download the weights elsewhere "
                f"and pass the file with --pretrained PATH."
            ) from None
        source, tag = "open_clip", pretrained
    else:
        log.warning("Model %s has no pretrained weights: it is randomly initialised (seed 0).", name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            module, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None, device="cpu")
        source, tag = "open_clip-random", None
    tokenizer = open_clip.get_tokenizer(name)
    info = ModelInfo(name=name, pretrained=tag, source=source, weights_sha256=state_dict_sha256(module))
    return OpenClipModel(module, preprocess, tokenizer, info, device)


def _training_provenance(folder: Path) -> dict[str, Any]:
    """What a folder written by ``clipaudit train`` says it was trained on (``training.json``), else nothing."""
    import json

    path = folder / "training.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: data[k] for k in ("trained_on_test_data", "training_dataset") if isinstance(data, dict) and k in data}


def _load_local_dir(model: str, device: torch.device) -> OpenClipModel:
    import open_clip

    folder = Path(model[len(LOCAL_DIR):]).expanduser()
    config = folder / "open_clip_config.json"
    if not config.is_file():
        raise ClipauditError(f"{model!r}: expected a folder with open_clip_config.json, not found: {config}")
    weights = open_clip.factory._find_checkpoint_in_dir(folder)
    try:
        module, _, preprocess = open_clip.create_model_and_transforms(f"{LOCAL_DIR}{folder}", device="cpu")
    except Exception as err:  # noqa: BLE001 - every failure becomes one line naming the file
        first = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:300]}"
        if weights is not None:
            state, why = _read_state_dict(weights)
            if state is None:
                raise _unreadable(weights, why) from None
            try:
                module, _, _ = open_clip.create_model_and_transforms(f"{LOCAL_DIR}{folder}", device="cpu",
                                                                     load_weights=False)
                problem = describe_state_dict_mismatch(module, state)
            except Exception:  # noqa: BLE001 - the config itself is the problem: reported below
                problem = ""
            if problem:
                raise ClipauditError(f"Weights {weights!r} do not match {config}: {problem}.") from None
        raise ClipauditError(f"{model!r}: cannot build the model from {config} ({first}).") from None
    if weights is None:
        raise ClipauditError(f"{model!r}: no weights file (*.safetensors, *.bin, *.pth) in {folder}.")
    tokenizer = open_clip.get_tokenizer(f"{LOCAL_DIR}{folder}")
    info = ModelInfo(name=f"{LOCAL_DIR}{folder.resolve()}", pretrained=str(Path(weights).resolve()),
                     source="open_clip-local-dir", weights_sha256=state_dict_sha256(module),
                     extra=_training_provenance(folder))
    return OpenClipModel(module, preprocess, tokenizer, info, device)
