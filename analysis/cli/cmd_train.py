"""``clipaudit train``: train a CLIP-style model (LiT heads on frozen towers, or a tiny open_clip from scratch).

This module only declares the command; the options are :mod:`analysis.train.params` and the work is
:func:`analysis.train.main.run` (``train(job)``). Runs the same way under
``torchrun --nproc_per_node=K "$(command -v clipaudit)" train ...`` (DDP; gloo on CPU, nccl on GPU);
``--batch-size`` is the global batch.
"""

from __future__ import annotations

import argparse
from typing import Any

NAME = "train"
HELP = ("train LiT heads (frozen towers, or a fine-tuned text tower) or a small open_clip model from scratch "
        "(InfoNCE or SigLIP)")
DESCRIPTION = """\
Train a CLIP-style model with InfoNCE or SigLIP.

  --mode lit            LiT, both towers locked (EfficientNet-Lite0 image, MiniLM text): train two projection
                        heads and the temperature on tower features computed once and cached.
  --mode lit --train-text all|last:N
                        LiT, only the image tower locked: the MiniLM text tower (all of it, or its last N of 6
                        transformer layers) is fine-tuned with the heads at --text-lr (default 2e-5); image
                        features still come from the cache, captions are encoded per batch. The model folder
                        also gets text_tower.safetensors (the trained parameters only: ~7 MB per layer,
                        ~87 MB for all), so keep it with the folder.
  --mode scratch        train a small open_clip config (--model) from scratch on the images.

Data: the default is Fashion-MNIST's train split; a dataset's train split is used when it has one. Test
splits (the bundled images are Fashion-MNIST test images) are refused unless --allow-test-data is given;
every model folder records its training data (name, split, subset, fingerprint) and trained_on_test_data.

Runs the same under torchrun (DDP; gloo on CPU, nccl on GPU), --batch-size being the global batch:
  torchrun --nproc_per_node=2 "$(command -v clipaudit)" train --dataset fashion-mnist --out my-lit
"""

#: Helpers that used to live here, still importable (``from analysis.cli.cmd_train import resolve_caption_file``).
_MOVED = {"resolve_caption_file": ("data", "resolve_caption_file"), "_read_mapping": ("data", "read_caption_mapping"),
          "_file_ref": ("data", "file_ref"), "CAPTION_FILES": ("data", "CAPTION_FILES"),
          "TEXT_LR": ("config", "TEXT_LR"), "MODES": ("config", "MODES"), "AUTO": ("config", "AUTO")}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from importlib import import_module

        module, attr = _MOVED[name]
        return getattr(import_module(f"analysis.train.{module}"), attr)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.params import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from ..train.main import run as run_training

    return run_training(args)
