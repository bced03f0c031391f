"""Scratch mode: train a small open_clip architecture from scratch and write an open_clip local-dir folder."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._atomic import atomic_write_bytes, atomic_write_json
from .._checks import ClipauditError, check_choice
from ..data.base import UNSPECIFIED
from .captions import CaptionPool
from .config import TrainConfig, TrainResult
from .data import training_provenance
from .distributed import DistInfo, barrier
from .loop import fit
from .losses import CLIP_INIT_SCALE, SIGLIP_INIT_BIAS, SIGLIP_INIT_SCALE
from .sources import ImageSource

__all__ = ["train_open_clip", "save_open_clip_folder"]


class _OpenClipPairs(nn.Module):
    """open_clip ``CLIP`` as ``(images, tokens) -> (img, txt, scale[, bias])`` with ``logit_scale`` exposed."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.clip = clip

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale

    def forward(self, images: torch.Tensor, tokens: torch.Tensor):
        return self.clip(images, tokens)


def _open_clip_cfg(model_name: str, loss: str) -> dict[str, Any]:
    import open_clip

    from ..models import CONFIG_DIR

    if model_name not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        check_choice("model", model_name, open_clip.list_models())
    if loss == "siglip":
        cfg["init_logit_scale"], cfg["init_logit_bias"] = math.log(SIGLIP_INIT_SCALE), SIGLIP_INIT_BIAS
    else:
        cfg["init_logit_scale"] = math.log(CLIP_INIT_SCALE)
    return cfg


def save_open_clip_folder(clip: nn.Module, folder: str | os.PathLike[str], model_cfg: dict[str, Any],
                          extra: dict[str, Any] | None = None) -> Path:
    """Write an open_clip local-dir model folder: ``open_clip_config.json`` + ``open_clip_model.safetensors``.

    ``extra`` (training config, data fingerprint...) goes to ``training.json`` next to them.
    """
    from safetensors.torch import save

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in clip.state_dict().items()}
    atomic_write_bytes(folder / "open_clip_model.safetensors", save(state))
    preprocess_cfg = dict(getattr(clip.visual, "preprocess_cfg", {}) or {})
    atomic_write_json(folder / "open_clip_config.json", {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg})
    if extra is not None:
        atomic_write_json(folder / "training.json", extra)
    return folder


def train_open_clip(dataset: Any, pool: CaptionPool, out_dir: str | os.PathLike[str], *,
                    model_name: str = "clipaudit-tiny-vit", config: TrainConfig | None = None,
                    fingerprint: str | None = None, info: DistInfo | None = None, resume: bool = False,
                    progress: bool = True, num_workers: int = 0,
                    provenance: dict[str, Any] | None = None) -> TrainResult:
    """Train an open_clip config from scratch on images + captions; write a folder ``load_model`` reads.

    Parameters
    ----------
    dataset : ImageDataset
        Images (``load_image``) and ``labels``; unreadable images are skipped and listed in the result.
    pool : CaptionPool
        Captions per image (:func:`analysis.train.captions.caption_pool`).
    out_dir : path
        The model folder (also holds ``train_log.csv``, ``training.json`` and ``checkpoints/``).
    model_name : str, default="clipaudit-tiny-vit"
        An open_clip architecture (the project's tiny configs are registered here).
    config : TrainConfig, optional
    fingerprint : str, optional
        Default: ``dataset.fingerprint()`` + the caption texts.
    info, resume, progress
        See :func:`fit`.
    num_workers : int, default=0
        DataLoader workers for image decoding.
    provenance : dict, optional
        JSON-able facts about the training data for ``training.json``; default:
        :func:`analysis.train.data.training_provenance` (``trained_on_test_data`` and ``training_dataset``:
        name, split, subset_info, fingerprint). ``training.json`` also records ``dataset`` and ``split``.

    Notes
    -----
    Images go through the model's evaluation transform (no augmentation), so runs are reproducible
    from the seed. SigLIP starts with ``t' = log 10``, ``b = -10``; InfoNCE with ``log(1/0.07)``.
    """
    import open_clip
    from open_clip.transform import PreprocessCfg, image_transform_v2

    from ..data.base import hash_items

    if len(pool) != len(dataset):
        raise ClipauditError(f"pool has captions for {len(pool)} images but the dataset has {len(dataset)}.")
    config = config or TrainConfig()
    info = info or DistInfo()
    cfg = _open_clip_cfg(model_name, config.loss)
    torch.manual_seed(config.seed)
    clip = open_clip.create_model(model_name, pretrained=None, device="cpu",
                                  **{k: cfg[k] for k in ("init_logit_scale", "init_logit_bias") if k in cfg})
    preprocess = image_transform_v2(PreprocessCfg(**clip.visual.preprocess_cfg), is_train=False)
    tokenizer = open_clip.get_tokenizer(model_name)
    tokens = tokenizer(pool.texts)
    fingerprint = fingerprint or hash_items(dataset.fingerprint(), pool.texts, pool.starts.tolist(),
                                            pool.counts.tolist())
    source = ImageSource(dataset, preprocess, tokens, info.device, num_workers=num_workers)
    meta = {"mode": "scratch", "model": model_name, "model_cfg": cfg}
    model = _OpenClipPairs(clip)
    result = fit(model, source, pool, dataset.labels, out_dir, config=config, fingerprint=fingerprint,
                 model_meta=meta, info=info, resume=resume, progress=progress)
    if info.is_main:
        extra = {"config": config.as_dict(), "data_fingerprint": fingerprint, "dataset": getattr(dataset, "name", ""),
                 "split": getattr(dataset, "split", UNSPECIFIED), "steps": result.steps, "final_loss": result.loss,
                 "skipped_images": result.skipped, **meta,
                 **(provenance if provenance is not None else training_provenance(dataset))}
        save_open_clip_folder(clip, out_dir, cfg, extra)
    barrier(info)
    return result
