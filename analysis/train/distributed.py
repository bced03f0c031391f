"""Multi-process training under ``torchrun``: process-group setup, DDP wrapping, reductions.

``clipaudit train`` is the same command on one process or many: under ``torchrun --nproc_per_node=K``
the environment variables ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` are set, :func:`init_distributed`
joins the process group (``nccl`` on GPU, ``gloo`` on CPU) and the losses gather embeddings across
ranks with gradients (see :mod:`analysis.train.losses`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .._checks import ClipauditError

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "wrap_ddp", "all_reduce_mean",
           "barrier", "unwrap", "is_main_process"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size``, its ``local_rank`` and ``device``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | torch.device = "cpu", *, backend: str | None = None) -> DistInfo:
    """Join the process group if launched by ``torchrun`` (``WORLD_SIZE`` > 1), else return a 1-process info.

    Parameters
    ----------
    device : str or torch.device, default="cpu"
        ``"cuda"`` places each rank on ``cuda:LOCAL_RANK``.
    backend : str, optional
        Default: ``nccl`` for CUDA, ``gloo`` otherwise.
    """
    device = torch.device(device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ClipauditError("device='cuda' but CUDA is not available; use --device cpu (gloo backend).")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend or ("nccl" if device.type == "cuda" else "gloo"))
    return DistInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def is_main_process() -> bool:
    """False on the ranks > 0 of a ``torchrun`` job (reads ``RANK``, so it also works after cleanup)."""
    return int(os.environ.get("RANK", "0")) == 0


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, info: DistInfo) -> nn.Module:
    """Wrap in :class:`~torch.nn.parallel.DistributedDataParallel` when running on several processes."""
    if not info.distributed:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DDP wrapper (or the module itself)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def all_reduce_mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean of ``value`` over ranks (a detached copy; ``value`` itself when single-process)."""
    if not info.distributed:
        return value.detach()
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / info.world_size


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()
