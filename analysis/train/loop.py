"""The training loop behind ``clipaudit train``: one loop (:func:`fit`), two modes.

The package is split by concern, as ``open_clip_train`` is: :mod:`~analysis.train.config` (what a run is),
:mod:`~analysis.train.data` (training data, split check, captions), :mod:`~analysis.train.sources` (batches),
:mod:`~analysis.train.features` (cached LiT tower features), this module (the loop),
:mod:`~analysis.train.checkpoints`, :mod:`~analysis.train.scratch` and :mod:`~analysis.train.lit` (the two
modes) and :mod:`~analysis.train.main` (``train(job)`` / ``main(argv)``). The names that used to live here
(``TrainConfig``, ``train_lit``, ``lit_tower_features``...) are still importable from this module.

* :func:`train_open_clip` trains a small open_clip config from scratch on images + captions and writes an
  open_clip local-dir folder (``open_clip_config.json`` + ``open_clip_model.safetensors``) that
  :func:`analysis.models.load_model` loads.
* :func:`train_lit` trains projection heads and the temperature (LiT with both towers locked) on
  pre-computed tower features (from the embedding cache), so an epoch is a few matrix products. The
  saved format belongs to :mod:`analysis.models.lit`; this module only calls the ``save_fn`` it is given.
  With a ``text_encoder`` (LiT with only the image tower locked) the image side still comes from the
  cached features, while captions are tokenised per batch and the text tower (or its selected layers) is
  trained with the heads, at its own learning rate ``TrainConfig.text_lr``.

Both go through :func:`fit`, which handles the data order, DDP, logging, checkpoints and resuming:

* **Batches.** ``batch_size`` is the *global* batch; with ``K`` processes each takes a contiguous
  ``batch_size / K`` slice, so the global batches (and the loss) do not depend on ``K``. The order of
  epoch ``e`` is a permutation drawn from ``(seed, e)`` and each image draws one of its captions from
  ``(seed, e)`` too; the last incomplete batch is dropped (all ranks need equal shapes to gather).
* **Log.** ``train_log.csv`` in ``out_dir``: step, epoch, loss (mean over ranks), logit_scale,
  logit_bias, lr — one row per optimizer step.
* **Checkpoints.** ``out_dir/checkpoints/step_XXXXXXXX.pt`` (written atomically; model, optimizer,
  scheduler, RNG state, config and data fingerprint). Frozen parameters (``requires_grad=False``, e.g.
  the untrained layers of a LiT text tower) are left out: they come from the pretrained weights, whose
  hash is part of the data fingerprint. ``resume=True`` continues from the latest one;
  it refuses a checkpoint from a different config or data.
* **Temperature.** The log-scale is clamped in place to ``[0, log max_logit_scale]`` after every
  optimizer step (open_clip's rule); :class:`~analysis.train.losses.LogitScale` also clamps in forward.
"""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import ClipauditError
from .captions import CaptionPool
from .checkpoints import CHECKPOINT_DIR, check_resume, latest_checkpoint, load_trainable_state, save_checkpoint
from .config import TrainConfig, TrainResult
from .distributed import DistInfo, all_reduce_mean, barrier, wrap_ddp
from .losses import LogitScale, clamp_logit_scale_, create_loss
from .sources import _Source

__all__ = ["fit", "LOG_NAME", "LOG_FIELDS", "TEXT_PREFIX", "TrainConfig", "TrainResult", "latest_checkpoint",
           "CHECKPOINT_DIR"]

log = logging.getLogger(__name__)
LOG_NAME = "train_log.csv"
LOG_FIELDS = ["step", "epoch", "loss", "logit_scale", "logit_bias", "lr"]

#: Names that moved to other modules of the package, still importable from here (``from .loop import X``).
_MOVED = {"LitFeatures": "features", "lit_tower_features": "features", "lit_text_features": "features",
          "train_open_clip": "scratch", "save_open_clip_folder": "scratch", "_open_clip_cfg": "scratch",
          "train_lit": "lit"}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from importlib import import_module

        return getattr(import_module(f".{_MOVED[name]}", __package__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ------------------------------------------------------------------------------------------- the loop
#: Parameters whose name starts with this get ``TrainConfig.text_lr`` (a trained LiT text tower).
TEXT_PREFIX = "text_encoder."


def _param_groups(model: nn.Module, weight_decay: float, text_lr: float | None = None) -> list[dict[str, Any]]:
    """AdamW groups: (no decay, decay) for the model, then the same two for a trained text tower (own lr)."""
    decay, no_decay, text_decay, text_no_decay = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        if name.startswith(TEXT_PREFIX):
            (text_no_decay if exclude else text_decay).append(p)
        else:
            (no_decay if exclude else decay).append(p)
    groups = [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]
    text_extra = {} if text_lr is None else {"lr": text_lr}
    groups += [{"params": ps, "weight_decay": wd, **text_extra}
               for ps, wd in ((text_no_decay, 0.0), (text_decay, weight_decay)) if ps]
    return groups


def _lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return f


def _log_scale_param(model: nn.Module) -> tuple[torch.Tensor, float]:
    """The model's log-scale parameter and its clamp bound."""
    ls = getattr(model, "logit_scale", None)
    if isinstance(ls, LogitScale):
        return ls.log_scale, ls.max_scale
    if isinstance(ls, torch.Tensor):
        return ls, math.inf
    raise ClipauditError(f"{type(model).__name__} has no 'logit_scale' (a LogitScale or a log-scale Parameter).")


def _as_float(x: Any) -> float | None:
    return None if x is None else float(torch.as_tensor(x).detach().reshape(-1)[0])


def _open_log(out_dir: Path, start_step: int) -> tuple[Any, Any]:
    """Open the CSV log for appending, dropping rows past ``start_step`` (from an interrupted run)."""
    path = out_dir / LOG_NAME
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    if start_step and path.is_file():
        with open(path, newline="") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= start_step]
    fh = open(path, "w", newline="")  # noqa: SIM115 - closed by fit()
    writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
    writer.writeheader()
    writer.writerows(rows)
    return fh, writer


def fit(model: nn.Module, source: _Source, pool: CaptionPool, labels: np.ndarray, out_dir: str | os.PathLike[str],
        *, config: TrainConfig, fingerprint: str, model_meta: dict[str, Any] | None = None,
        info: DistInfo | None = None, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``model`` (``model(images, texts) -> (img_emb, txt_emb, scale[, bias])``) on ``source`` pairs.

    Parameters
    ----------
    model : nn.Module
        Returns L2-normalised embeddings, the logit scale and (SigLIP) bias; has a ``logit_scale``
        attribute (a :class:`LogitScale` or open_clip's log-scale parameter).
    source : _Source
        Image side (pixels or cached features) per index batch, text side (tokens or features) per caption id.
    pool : CaptionPool
        Caption candidates per image; images with no candidate are never used.
    labels : ndarray of shape (n_images,)
        Class per image (-1 = none), used by the multi-positive loss.
    out_dir : path
        Receives ``train_log.csv`` and ``checkpoints/``.
    config : TrainConfig
    fingerprint : str
        Identifies the data and captions; stored in checkpoints and checked on resume.
    model_meta : dict, optional
        What identifies the architecture (stored, and checked on resume).
    info : DistInfo, optional
        From :func:`~analysis.train.distributed.init_distributed` (default: one process on CPU).
    resume : bool, default=False
        Continue from the latest checkpoint in ``out_dir`` (error if there is none).
    progress : bool, default=True
        Show a tqdm bar (rank 0).

    Raises
    ------
    ClipauditError
        Too few usable pairs for one batch, ``batch_size`` not divisible by the process count, a resume
        with nothing to resume or a mismatched checkpoint, or checkpoints present without ``resume``.
    """
    from tqdm.auto import tqdm

    info = info or DistInfo()
    model_meta = model_meta or {}
    out_dir = Path(out_dir)
    usable = np.flatnonzero(pool.counts > 0)
    if config.batch_size % info.world_size:
        raise ClipauditError(f"batch_size={config.batch_size} must be divisible by the number of processes "
                             f"({info.world_size}).")
    steps_per_epoch = len(usable) // config.batch_size
    if steps_per_epoch == 0:
        raise ClipauditError(f"Only {len(usable)} images have a caption: fewer than batch_size="
                             f"{config.batch_size}. Lower --batch-size or add data.")
    total = config.max_steps or config.epochs * steps_per_epoch
    labels_t = torch.as_tensor(np.asarray(labels, dtype=np.int64))

    model = model.to(info.device)
    opt = torch.optim.AdamW(_param_groups(model, config.weight_decay, config.text_lr), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config.warmup_steps, total))
    step = 0
    latest = latest_checkpoint(out_dir)
    if resume:
        if latest is None:
            raise ClipauditError(f"--resume: no checkpoint in {out_dir / CHECKPOINT_DIR}.")
        ckpt = torch.load(latest, map_location="cpu", weights_only=True)
        check_resume(ckpt, latest, config, fingerprint, model_meta)
        load_trainable_state(model, ckpt["model"], latest)
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        step = int(ckpt["step"])
        # a resumed run may train longer: the schedule follows the new total
        sched.lr_lambdas[0] = _lr_lambda(config.warmup_steps, total)
    elif latest is not None:
        raise ClipauditError(f"{out_dir} already has checkpoints ({latest.name}); pass --resume to continue "
                             f"that run, or choose another output folder.")
    loss_fn = create_loss(config.loss, multi_positive=config.multi_positive, rank=info.rank,
                          world_size=info.world_size)
    ddp_model = wrap_ddp(model, info)
    log_scale, max_scale = _log_scale_param(model)
    max_scale = min(max_scale, config.max_logit_scale)
    clamp_logit_scale_(log_scale, max_scale)

    fh, writer = _open_log(out_dir, step) if info.is_main else (None, None)
    bar = tqdm(total=total, initial=step, disable=not (progress and info.is_main), desc="train", unit="step")
    ckpt_path, loss_value = latest if resume else None, float("nan")
    local = config.batch_size // info.world_size
    try:
        model.train()
        while step < total:
            epoch, skip = divmod(step, steps_per_epoch)
            order = usable[np.random.default_rng([config.seed, epoch, 1]).permutation(len(usable))]
            caption_ids = pool.sample(config.seed, epoch)
            batches = [order[(b * config.batch_size) + info.rank * local:][:local]
                       for b in range(skip, min(steps_per_epoch, skip + total - step))]
            for images, idx in source.images(batches):
                n = torch.tensor(0 if images is None else len(idx))
                if info.distributed:  # every rank must contribute the same number of pairs
                    torch.distributed.all_reduce(n, op=torch.distributed.ReduceOp.MIN)
                n = int(n)
                if n >= 2:
                    idx = idx[:n]
                    out = ddp_model(images[:n], source.texts(caption_ids[idx]))
                    bias = out[3] if len(out) > 3 else None
                    loss = loss_fn(out[0], out[1], out[2], bias, class_labels=labels_t[idx].to(info.device))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    clamp_logit_scale_(log_scale, max_scale)
                    loss_value = float(all_reduce_mean(loss, info))
                else:
                    log.warning("Step %d: fewer than 2 readable images in the batch; step skipped.", step)
                    out, bias = (None, None, log_scale.exp()), None
                sched.step()
                step += 1
                if writer is not None:
                    writer.writerow({"step": step, "epoch": epoch, "loss": loss_value,
                                     "logit_scale": _as_float(out[2]), "logit_bias": _as_float(bias),
                                     "lr": opt.param_groups[0]["lr"]})
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", scale=f"{_as_float(out[2]):.2f}")
                end_of_epoch = step % steps_per_epoch == 0
                if end_of_epoch or step == total or (config.checkpoint_every and step % config.checkpoint_every == 0):
                    if info.is_main:
                        fh.flush()
                        ckpt_path = save_checkpoint(out_dir, step, epoch, model, opt, sched, config,
                                                    fingerprint, model_meta)
                    barrier(info)
    finally:
        bar.close()
        if fh is not None:
            fh.close()
    model.eval()
    skipped = sorted(getattr(source, "skipped", ()))
    return TrainResult(steps=step, loss=loss_value, log_path=out_dir / LOG_NAME, checkpoint=ckpt_path,
                       skipped=skipped)
