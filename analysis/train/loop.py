"""The training loop behind ``clipaudit train``: one loop, two modes.

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
import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._atomic import atomic_path, atomic_write_bytes, atomic_write_json
from .._checks import ClipauditError, check_choice, check_positive_int
from .captions import CaptionPool
from .distributed import DistInfo, all_reduce_mean, barrier, unwrap, wrap_ddp
from .losses import (
    CLIP_INIT_SCALE,
    LOSSES,
    SIGLIP_INIT_BIAS,
    SIGLIP_INIT_SCALE,
    LogitScale,
    clamp_logit_scale_,
    create_loss,
)

__all__ = ["TrainConfig", "TrainResult", "LitFeatures", "fit", "train_open_clip",
           "train_lit", "lit_tower_features", "lit_text_features", "save_open_clip_folder", "latest_checkpoint",
           "LOG_NAME", "CHECKPOINT_DIR"]

log = logging.getLogger(__name__)
LOG_NAME = "train_log.csv"
CHECKPOINT_DIR = "checkpoints"
LOG_FIELDS = ["step", "epoch", "loss", "logit_scale", "logit_bias", "lr"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one training run (saved in every checkpoint).

    Parameters
    ----------
    loss : {"infonce", "siglip"}, default="infonce"
    multi_positive : bool, default=False
        InfoNCE only: same-class pairs in a batch are positives, not negatives.
    epochs : int, default=1
    max_steps : int, optional
        Stop after this many optimizer steps (default: ``epochs`` full epochs).
    batch_size : int, default=64
        Global batch size (split evenly over processes).
    lr, weight_decay : float
        AdamW; weight decay is not applied to biases, norms, the logit scale and bias (as open_clip).
    text_lr : float, optional
        Learning rate of a trained text tower (parameters under the model's ``text_encoder.``), e.g. 2e-5
        for a pretrained MiniLM; default: ``lr``. Follows the same warm-up/cosine schedule. The log's
        ``lr`` column is the heads' rate.
    warmup_steps : int, default=0
        Linear warm-up, then cosine decay to 0 at the last step.
    seed : int, default=0
        Seeds the model initialisation, the data order and the caption draws.
    max_logit_scale : float, default=100
    checkpoint_every : int, default=0
        Also checkpoint every this many steps (0 = at the end of each epoch and at the end only).
    keep_checkpoints : int, default=2
        Older checkpoints are deleted.
    """

    loss: str = "infonce"
    multi_positive: bool = False
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    text_lr: float | None = None
    weight_decay: float = 0.1
    warmup_steps: int = 0
    seed: int = 0
    max_logit_scale: float = 100.0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2

    #: Fields a resumed run may change (to train longer, or checkpoint differently).
    RESUMABLE_CHANGES = frozenset({"epochs", "max_steps", "checkpoint_every", "keep_checkpoints"})

    def __post_init__(self) -> None:
        check_choice("loss", self.loss, LOSSES)
        if self.multi_positive and self.loss != "infonce":
            raise ClipauditError("multi_positive is only available for loss='infonce', got loss='siglip'.")
        check_positive_int("epochs", self.epochs)
        check_positive_int("max_steps", self.max_steps, allow_none=True)
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("keep_checkpoints", self.keep_checkpoints)
        for name in ("lr", "max_logit_scale"):
            if not getattr(self, name) > 0:
                raise ClipauditError(f"{name} must be > 0, got {getattr(self, name)!r}.")
        if self.text_lr is not None and not self.text_lr > 0:
            raise ClipauditError(f"text_lr must be > 0 (or None: same as lr), got {self.text_lr!r}.")
        for name in ("weight_decay", "warmup_steps", "checkpoint_every"):
            if getattr(self, name) < 0:
                raise ClipauditError(f"{name} must be >= 0, got {getattr(self, name)!r}.")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """What a run produced: ``steps`` done, last step's ``loss``, the log and last checkpoint paths."""

    steps: int
    loss: float
    log_path: Path
    checkpoint: Path | None
    skipped: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------- sources
class _Source:
    """Gives the image side of a batch for some image indices, and the text side for caption ids."""

    def images(self, index_batches: Sequence[np.ndarray]) -> Iterator[tuple[Any, np.ndarray]]:
        raise NotImplementedError

    def texts(self, caption_ids: np.ndarray) -> Any:
        raise NotImplementedError


class _FeatureSource(_Source):
    """Cached image features; cached text features, or (``text=None``) the caption strings themselves."""

    def __init__(self, image: torch.Tensor, text: torch.Tensor | None, device: torch.device,
                 captions: Sequence[str] = ()) -> None:
        self.image, self.device = image.to(device), device
        self.text = None if text is None else text.to(device)
        self.captions = captions

    def images(self, index_batches):
        for idx in index_batches:
            yield self.image[torch.as_tensor(idx, device=self.device)], idx

    def texts(self, caption_ids):
        if self.text is None:
            return [self.captions[int(i)] for i in caption_ids]
        return self.text[torch.as_tensor(caption_ids, device=self.device)]


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, dataset: Any, preprocess: Callable) -> None:
        self.dataset, self.preprocess = dataset, preprocess

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int]:
        try:
            return self.preprocess(self.dataset.load_image(int(i))), int(i)
        except OSError as err:
            log.warning("Skipping unreadable image %s (%s).", self.dataset.describe(int(i)), err)
            return None, int(i)


def _collate(items):
    ok = [(x, i) for x, i in items if x is not None]
    bad = np.array([i for x, i in items if x is None], dtype=np.int64)
    images = torch.stack([x for x, _ in ok]) if ok else None
    return images, np.array([i for _, i in ok], dtype=np.int64), bad


class _ImageSource(_Source):
    def __init__(self, dataset: Any, preprocess: Callable, tokens: torch.Tensor, device: torch.device,
                 num_workers: int = 0) -> None:
        self.data = _ImageDataset(dataset, preprocess)
        self.tokens, self.device, self.num_workers = tokens, device, num_workers
        self.skipped: set[str] = set()

    def images(self, index_batches):
        batches = [list(map(int, b)) for b in index_batches]
        loader = torch.utils.data.DataLoader(self.data, batch_sampler=batches, collate_fn=_collate,
                                             num_workers=self.num_workers)
        for images, valid, bad in loader:
            self.skipped.update(self.data.dataset.describe(int(i)) for i in bad)
            yield (None if images is None else images.to(self.device)), valid

    def texts(self, caption_ids):
        return self.tokens[torch.as_tensor(caption_ids)].to(self.device)


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


def latest_checkpoint(out_dir: str | os.PathLike[str]) -> Path | None:
    """The checkpoint with the highest step in ``out_dir/checkpoints`` (None if there is none)."""
    folder = Path(out_dir) / CHECKPOINT_DIR
    found = sorted(folder.glob("step_*.pt")) if folder.is_dir() else []
    return found[-1] if found else None


def _check_resume(ckpt: dict[str, Any], path: Path, config: TrainConfig, fingerprint: str,
                  model_meta: dict[str, Any]) -> None:
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


def _frozen_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without frozen parameters (e.g. a locked pretrained text tower: they come from its wheel)."""
    frozen = _frozen_names(model)
    return {k: v for k, v in model.state_dict().items() if k not in frozen}


def _load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    result = model.load_state_dict(state, strict=False)
    missing = sorted(set(result.missing_keys) - _frozen_names(model))
    if missing or result.unexpected_keys:
        raise ClipauditError(f"--resume: checkpoint {path} does not fit the model (missing {missing[:3]}, "
                             f"unexpected {sorted(result.unexpected_keys)[:3]}).")


def _save_checkpoint(out_dir: Path, step: int, epoch: int, model: nn.Module, opt, sched, config: TrainConfig,
                     fingerprint: str, model_meta: dict[str, Any]) -> Path:
    path = out_dir / CHECKPOINT_DIR / f"step_{step:08d}.pt"
    state = {
        "model": _trainable_state(unwrap(model)), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "step": step, "epoch": epoch, "config": config.as_dict(), "data_fingerprint": fingerprint,
        "model_meta": json.loads(json.dumps(model_meta)), "torch_rng": torch.get_rng_state(),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    for old in sorted(path.parent.glob("step_*.pt"))[:-config.keep_checkpoints]:
        old.unlink()
    return path


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
        _check_resume(ckpt, latest, config, fingerprint, model_meta)
        _load_trainable_state(model, ckpt["model"], latest)
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
                        ckpt_path = _save_checkpoint(out_dir, step, epoch, model, opt, sched, config,
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


# -------------------------------------------------------------------------------- from-scratch open_clip
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
                    model_name: str = "clipaudit-tiny-vit", config: TrainConfig = TrainConfig(),
                    fingerprint: str | None = None, info: DistInfo | None = None, resume: bool = False,
                    progress: bool = True, num_workers: int = 0) -> TrainResult:
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
    config : TrainConfig
    fingerprint : str, optional
        Default: ``dataset.fingerprint()`` + the caption texts.
    info, resume, progress
        See :func:`fit`.
    num_workers : int, default=0
        DataLoader workers for image decoding.

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
    source = _ImageSource(dataset, preprocess, tokens, info.device, num_workers=num_workers)
    meta = {"mode": "scratch", "model": model_name, "model_cfg": cfg}
    model = _OpenClipPairs(clip)
    result = fit(model, source, pool, dataset.labels, out_dir, config=config, fingerprint=fingerprint,
                 model_meta=meta, info=info, resume=resume, progress=progress)
    if info.is_main:
        extra = {"config": config.as_dict(), "data_fingerprint": fingerprint, "dataset": getattr(dataset, "name", ""),
                 "steps": result.steps, "final_loss": result.loss, "skipped_images": result.skipped, **meta}
        save_open_clip_folder(clip, out_dir, cfg, extra)
    barrier(info)
    return result


# ------------------------------------------------------------------------------------------------ LiT
@dataclass(frozen=True)
class LitFeatures:
    """Locked-tower features for LiT: one row per image, one row per caption string of ``pool``.

    Attributes
    ----------
    image : ndarray of shape (n_images, d_image), float32
    text : ndarray of shape (len(pool.texts), d_text), float32, or None
        None when the text tower is trained (captions are encoded per batch).
    pool : CaptionPool
    labels : ndarray of shape (n_images,), int64
    fingerprint : str
        Identifies towers, data and captions (part of the checkpoint check on resume).
    """

    image: np.ndarray
    text: np.ndarray | None
    pool: CaptionPool
    labels: np.ndarray
    fingerprint: str


class _LitTextPairs(nn.Module):
    """``heads`` on cached image features and on a trained text encoder's features of caption strings."""

    def __init__(self, heads: nn.Module, text_encoder: nn.Module) -> None:
        super().__init__()
        self.heads, self.text_encoder = heads, text_encoder

    @property
    def logit_scale(self) -> torch.Tensor | LogitScale:
        return self.heads.logit_scale

    def forward(self, image_features: torch.Tensor, texts: Sequence[str]):
        return self.heads(image_features, self.text_encoder(texts))


def train_lit(feature_fn: Callable[[], LitFeatures], heads: nn.Module, out_dir: str | os.PathLike[str], *,
              config: TrainConfig = TrainConfig(), save_fn: Callable[[nn.Module, Path, dict[str, Any]], Any]
              | None = None, model_meta: dict[str, Any] | None = None, info: DistInfo | None = None,
              resume: bool = False, progress: bool = True, text_encoder: nn.Module | None = None) -> TrainResult:
    """LiT: train ``heads`` on cached image-tower features, with a locked or a trained text tower.

    Parameters
    ----------
    feature_fn : callable () -> LitFeatures
        Computes (or reads from the embedding cache) the locked towers' features.
    heads : nn.Module
        ``heads(image_features, text_features) -> (img_emb, txt_emb, scale, bias)``, e.g.
        :class:`analysis.models.lit.LitHeads`.
    out_dir : path
        Log and checkpoints; ``save_fn(heads, out_dir, meta)`` writes the model there (its format is
        :mod:`analysis.models.lit`'s). ``save_fn=None`` keeps only the checkpoints.
    config, info, resume, progress
        See :func:`fit`.
    text_encoder : nn.Module, optional
        A trainable text tower, ``text_encoder(list of captions) -> (B, d_text)`` features (e.g.
        :class:`analysis.models.lit.LitTextEncoder`): the captions of each batch are tokenised and encoded
        by it (``feats.text`` is not used and may be None) and its parameters with ``requires_grad`` are
        trained in place at ``config.text_lr``. ``save_fn`` should save it too (it gets only the heads).
    """
    info = info or DistInfo()
    feats = feature_fn()
    n = len(feats.pool)
    n_text = len(feats.pool.texts) if feats.text is None else feats.text.shape[0]
    if feats.image.shape[0] != n or n_text != len(feats.pool.texts) or len(feats.labels) != n:
        raise ClipauditError(
            f"LiT features do not line up: {feats.image.shape[0]} image rows, {n} images in the caption pool, "
            f"{len(feats.labels)} labels, {n_text} text rows for {len(feats.pool.texts)} captions."
        )
    if feats.text is None and text_encoder is None:
        raise ClipauditError("LiT features have no text features (text=None): pass a text_encoder to train the "
                             "text tower, or compute the locked text tower's features.")
    image = torch.as_tensor(feats.image, dtype=torch.float32)
    meta = {"mode": "lit", **(model_meta or {})}
    if text_encoder is None:
        source = _FeatureSource(image, torch.as_tensor(feats.text, dtype=torch.float32), info.device)
        model = heads
    else:
        source = _FeatureSource(image, None, info.device, captions=feats.pool.texts)
        model = _LitTextPairs(heads, text_encoder)
        meta["train_text"] = getattr(text_encoder, "trainable", type(text_encoder).__name__)
    result = fit(model, source, feats.pool, feats.labels, out_dir, config=config, fingerprint=feats.fingerprint,
                 model_meta=meta, info=info, resume=resume, progress=progress)
    if info.is_main and save_fn is not None:
        save_fn(heads.cpu(), Path(out_dir), {"config": config.as_dict(), "data_fingerprint": feats.fingerprint,
                                             "steps": result.steps, "final_loss": result.loss, **meta})
    barrier(info)
    return result



def lit_tower_features(dataset: Any, pool: CaptionPool, *, cache: Any = None, device: str | torch.device = "cpu",
                       image_size: int = 224, batch_size: int = 64, progress: bool = True,
                       text: bool = True) -> LitFeatures:
    """Frozen LiT tower features of ``dataset`` and of the captions of ``pool``, memoised in the cache.

    ``text=False`` (the text tower is trained): image features only, ``LitFeatures.text`` is None.

    Image features are the pooled EfficientNet-Lite0 map (1280-d), text features the MiniLM sentence
    embedding (384-d), from :mod:`analysis.models.lit`. They are stored through
    :meth:`EmbeddingCache.array` keyed by the towers' fingerprint, the dataset fingerprint, the image size
    and the caption texts, so a second run (or a resumed one) reads them back. Unreadable images are
    stored as NaN rows and get no caption (they are never drawn).
    """
    from tqdm.auto import tqdm

    from ..cache import EmbeddingCache
    from ..data.base import hash_items
    from ..models import lit

    cache = cache if cache is not None else EmbeddingCache(enabled=False)
    towers = lit.get_towers(device)
    transform = lit.lit_transform(image_size)

    def images() -> np.ndarray:
        rows = np.full((len(dataset), lit.IMAGE_FEATURE_DIM), np.nan, dtype=np.float32)
        for start in tqdm(range(0, len(dataset), batch_size), disable=not progress, desc="LiT image features"):
            idx, batch = [], []
            for i in range(start, min(len(dataset), start + batch_size)):
                try:
                    batch.append(transform(dataset.load_image(i)))
                    idx.append(i)
                except OSError as err:
                    log.warning("Skipping unreadable image %s (%s).", dataset.describe(i), err)
            if batch:
                rows[idx] = towers.image_features(torch.stack(batch)).cpu().numpy()
        return rows

    tower_id = towers.fingerprint()
    image = cache.array("lit-image-features", {"towers": tower_id, "dataset": dataset.fingerprint(),
                                               "image_size": image_size}, images)
    text_rows = lit_text_features(pool.texts, cache=cache, device=device, progress=progress) if text else None
    valid = ~np.isnan(image).any(axis=1)
    pool = dataclasses.replace(pool, counts=np.where(valid, pool.counts, 0))
    fingerprint = hash_items(tower_id, dataset.fingerprint(), image_size, pool.texts, pool.starts.tolist(),
                             pool.counts.tolist())
    return LitFeatures(np.nan_to_num(image), text_rows, pool, np.asarray(dataset.labels), fingerprint)


def lit_text_features(texts: Sequence[str], *, cache: Any = None, device: str | torch.device = "cpu",
                      progress: bool = False, batch_size: int = 256) -> np.ndarray:
    """Frozen LiT text-tower features (MiniLM sentence embeddings, 384-d) of ``texts``, memoised in the cache.

    Same cache entries as :func:`lit_tower_features` (keyed by the towers' fingerprint and the texts), so
    prompts encoded for training or evaluation are encoded once.
    """
    from tqdm.auto import tqdm

    from ..cache import EmbeddingCache
    from ..data.base import hash_items
    from ..models import lit

    cache = cache if cache is not None else EmbeddingCache(enabled=False)
    towers = lit.get_towers(device)
    texts = list(texts)

    def compute() -> np.ndarray:
        out = [towers.text_features(texts[s:s + batch_size]).cpu().numpy() for s in
               tqdm(range(0, len(texts), batch_size), disable=not progress, desc="LiT text features")]
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, lit.TEXT_FEATURE_DIM), np.float32)

    return cache.array("lit-text-features", {"towers": towers.fingerprint(), "texts": hash_items(texts)}, compute)
