"""Two CPU processes (gloo) give the same loss and gradients as one process on the same global batch."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from analysis.train.distributed import DistInfo, all_reduce_mean, unwrap, wrap_ddp
from analysis.train.losses import SIGLIP_INIT_BIAS, SIGLIP_INIT_SCALE, LogitScale, create_loss

WORLD = 2
N, D_IN, D = 8, 6, 5  # global batch, input dim, embedding dim
CASES = [("infonce", False), ("infonce", True), ("siglip", False)]


class Towers(nn.Module):
    def __init__(self, siglip: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.img = nn.Linear(D_IN, D)
        self.txt = nn.Linear(D_IN, D)
        self.scale = LogitScale(SIGLIP_INIT_SCALE, init_bias=SIGLIP_INIT_BIAS) if siglip else LogitScale()

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        return F.normalize(self.img(x), dim=-1), F.normalize(self.txt(y), dim=-1), self.scale(), self.scale.bias


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    labels = torch.tensor([0, 1, 0, 2, 1, -1, 2, 0])  # same-class pairs on both ranks
    return torch.randn(N, D_IN, generator=g), torch.randn(N, D_IN, generator=g), labels


def _loss_and_grads(model: nn.Module, loss_fn: nn.Module, x, y, labels, info: DistInfo):
    img, txt, scale, bias = model(x, y)
    loss = loss_fn(img, txt, scale, bias, class_labels=labels)
    loss.backward()
    grads = {k: p.grad.clone() for k, p in unwrap(model).named_parameters()}
    return all_reduce_mean(loss, info), grads


def _worker(rank: int, port: int, out: dict) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        info = DistInfo(rank=rank, world_size=WORLD)
        x, y, labels = _batch()
        rows = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
        results = []
        for name, multi in CASES:
            model = wrap_ddp(Towers(name == "siglip"), info)
            loss_fn = create_loss(name, multi_positive=multi, rank=rank, world_size=WORLD)
            results.append(_loss_and_grads(model, loss_fn, x[rows], y[rows], labels[rows], info))
        out[rank] = results
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(_free_port(), out), nprocs=WORLD, join=True)
        return dict(out)


@pytest.mark.parametrize("case", range(len(CASES)), ids=[f"{n}-multi{m}" for n, m in CASES])
def test_ddp_matches_single_process(ddp_results, case):
    name, multi = CASES[case]
    x, y, labels = _batch()
    model = Towers(name == "siglip")
    ref_loss, ref_grads = _loss_and_grads(model, create_loss(name, multi_positive=multi), x, y, labels, DistInfo())
    for rank in range(WORLD):
        loss, grads = ddp_results[rank][case]
        torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
        for key, ref in ref_grads.items():
            torch.testing.assert_close(grads[key], ref, rtol=1e-4, atol=1e-6, msg=f"{name} grad {key}")
