"""Radford et al. (ICML 2021), CLIP: zero-shot ImageNet top-1, 80-template ensemble vs "a photo of a {}.".

Each column is :func:`analysis.zeroshot.zeroshot_table` on the classifier state of one task context per
(model, dataset, prompt set); the image features are encoded once and shared by the three prompt sets.
``published.csv`` holds the paper's Table 11 numbers for RN50, ViT-B/32 and ViT-L/14@336.
"""

from __future__ import annotations

import pandas as pd

from ..data import load_templates
from .core import TABLES, ReproContext, TableSpec, row, zeroshot_metrics
from .ge2023 import _datasets

__all__ = ["radford2021_imagenet"]

PAPER = "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021"


def radford2021_imagenet(ctx: ReproContext) -> pd.DataFrame:
    """Top-1/top-5 with the prompt ensemble, the single "a photo of a {}." prompt, and the bare name."""
    tset = load_templates(ctx.templates)
    columns = ((f"{len(tset)}-template ensemble" if tset.name != "openai_imagenet" else "80-template ensemble",
                tset), ("a photo of a {}.", "photo"), ("name only '{}'", "name_only"))
    rows = []
    for ds in _datasets(ctx, ("imagenet-val",)):
        for entry in ctx.models:
            for column, templates in columns:
                m = zeroshot_metrics(ctx, ctx.task_context(entry, ds, templates))
                for name, key in (("top-1", "acc1"), ("top-5", "acc5")):
                    if key in m:
                        unit = "top-1 %" if key == "acc1" else "top-5 %"
                        rows.append(row("radford2021-imagenet", entry, ds, name, column, 100 * m[key], unit,
                                        m["n_images"], f"prompt set {m['templates']}"))
    return pd.DataFrame(rows)


TABLES.register("radford2021-imagenet", TableSpec(
    "radford2021-imagenet", "Radford et al. 2021 (CLIP): zero-shot ImageNet top-1, prompt ensemble vs one prompt",
    PAPER, radford2021_imagenet,
    tuple((m, "openai") for m in ("RN50", "RN101", "ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-L-14-336")),
    ("imagenet-val",),
    notes="Published: RN50, ViT-B/32 and ViT-L/14@336 from the paper's Table 11; other backbones not transcribed yet."),
    "Radford et al. 2021: zero-shot ImageNet, 80-template ensemble vs 'a photo of a {}.'")
