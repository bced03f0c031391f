"""Training CLIP-style models, split by concern as ``open_clip_train`` is.

- :mod:`~analysis.train.config`: :class:`TrainConfig` (hyper-parameters), :class:`TrainJob` (a whole
  ``clipaudit train`` run), :class:`TrainResult`;
- :mod:`~analysis.train.params`: the ``clipaudit train`` arguments (argparse only) -> :class:`TrainJob`;
- :mod:`~analysis.train.data`: the training dataset (train split by default, test data refused unless
  allowed), its captions and the provenance every model records;
- :mod:`~analysis.train.captions`: caption pools; :mod:`~analysis.train.losses`: InfoNCE, SigLIP;
- :mod:`~analysis.train.sources`: batches of pixels or cached features;
- :mod:`~analysis.train.features`: cached LiT tower features;
- :mod:`~analysis.train.loop`: :func:`fit`; :mod:`~analysis.train.checkpoints`;
- :mod:`~analysis.train.scratch` (:func:`train_open_clip`) and :mod:`~analysis.train.lit` (:func:`train_lit`);
- :mod:`~analysis.train.main`: :func:`train` (job -> result) and :func:`main` (argv);
- :mod:`~analysis.train.distributed`: multi-process helpers.

Names are imported on first use (``from analysis.train import train_lit``), so importing the package, e.g.
for ``clipaudit train --help``, does not import torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: public name -> module of this package that defines it
_EXPORTS = {
    "CaptionPool": "captions", "caption_pool": "captions", "class_captions": "captions",
    "LOSSES": "config", "TrainConfig": "config", "TrainJob": "config", "TrainResult": "config",
    "InfoNCELoss": "losses", "LogitScale": "losses", "SigLIPLoss": "losses", "create_loss": "losses",
    "infonce_loss": "losses", "siglip_loss": "losses",
    "LitFeatures": "features", "lit_tower_features": "features", "lit_text_features": "features",
    "fit": "loop", "latest_checkpoint": "checkpoints",
    "train_open_clip": "scratch", "save_open_clip_folder": "scratch", "train_lit": "lit",
    "load_training_dataset": "data", "training_provenance": "data",
    "train": "main",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
