"""Sammani & Deligiannis (NeurIPS 2024), mutual knowledge: MI and AUC per model, and accuracy with descriptors.

Both tables come from one :func:`analysis.concepts.pipeline.run_concepts` run per model (memoised), on
the ImageNet val classes present in the data (``concept_classes`` of them, default all, each with up to
``images_per_class`` images). The descriptor pool must be given (``descriptors``): the paper's is
most likely Menon & Vondrick's ImageNet descriptors, which clipaudit does not ship.

Differences from the paper, stated in the output: MI and AUC are averaged over classes (the reference
averages zero-padded curves over all images of the dataset); the accuracy with descriptors is over the
processed classes only (a C-way classifier among them), with the descriptors the pipeline discovered.
Classes whose OpenAI name occurs twice in ImageNet-1k (missile, sunglasses) are left out (the concepts
pipeline identifies classes by name).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from .._checks import ClipauditError
from ..zeroshot import run_zeroshot
from .core import TABLES, ModelEntry, ReproContext, TableSpec, row
from .ge2023 import _datasets

__all__ = ["concepts_run", "sammani2024_mi_auc", "sammani2024_descriptors"]

PAPER = ("Sammani & Deligiannis, Interpreting and Analysing CLIP's Zero-Shot Image Classification via Mutual "
         "Knowledge, NeurIPS 2024")


def concepts_run(ctx: ReproContext, entry: ModelEntry, dataset: str) -> Any:
    """The concepts pipeline on ``dataset`` for one model (memoised across the two tables)."""
    from ..concepts.descriptors import load_descriptors
    from ..concepts.pipeline import ConceptConfig, run_concepts

    spec = ctx.options.get("descriptors")
    if spec is None:
        raise ClipauditError("The Sammani & Deligiannis tables need a descriptor pool: pass --descriptors FILE "
                             "(e.g. Menon & Vondrick's descriptors_imagenet.json, a {class: [descriptors]} JSON); "
                             "clipaudit ships none for ImageNet.")

    def compute() -> Any:
        ds = ctx.dataset(dataset)
        counts = Counter(ds.classnames)
        present = np.unique(np.asarray(ds.labels)[np.asarray(ds.labels) >= 0])
        classes = [ds.classnames[i] for i in present if counts[ds.classnames[i]] == 1]
        k = ctx.options.get("concept_classes")
        classes = classes[:k] if k else classes
        if not classes:
            raise ClipauditError(f"No usable class in {dataset!r} for the concepts pipeline.")
        config = ConceptConfig(seed=ctx.seed, batch_size=ctx.cache.batch_size)
        return run_concepts(entry.model, ds, ctx.cache, load_descriptors(spec), classes=classes,
                            images_per_class=ctx.options.get("images_per_class", 50), templates=ctx.templates,
                            config=config, figure_images=0)

    return ctx.memoise(("concepts", entry.name, entry.model.info.weights_sha256, dataset), compute)


def sammani2024_mi_auc(ctx: ReproContext) -> pd.DataFrame:
    """MI and AUC (PCA and K-means concepts) and ImageNet top-1 per model."""
    rows = []
    for ds in _datasets(ctx, ("imagenet-val",)):
        for entry in ctx.models:
            res = concepts_run(ctx, entry, ds)
            zs = ctx.memoise(("zeroshot", entry.name, entry.model.info.weights_sha256, ds, str(ctx.templates)),
                             lambda e=entry, d=ds: run_zeroshot(e.model, ctx.dataset(d), ctx.cache,
                                                                templates=ctx.templates))
            m, n_cls = res.metrics, int(res.metrics["n_classes"])
            note = f"mean over {n_cls} classes (up to {res.info['images_per_class']} images each)"
            rows.append(row("sammani2024-mi-auc", entry, ds, "mean", "top-1", 100 * zs.metrics["acc1"], "top-1 %",
                            zs.metrics["n_images"], f"zero-shot, prompt set {zs.info['templates']}"))
            for method, label in (("pca", "PCA"), ("kmeans", "K-means")):
                if f"{method}_mi" in m:
                    n_img = int(m["n_images"])
                    rows.append(row("sammani2024-mi-auc", entry, ds, "mean", f"MI ({label})", m[f"{method}_mi"],
                                    "nats", n_img, note))
                    rows.append(row("sammani2024-mi-auc", entry, ds, "mean", f"AUC ({label})",
                                    m[f"{method}_auc_reference"], "nats", n_img,
                                    note + "; AUC = mean of the MI removal curve (the reference's definition)"))
    return pd.DataFrame(rows)


def sammani2024_descriptors(ctx: ReproContext) -> pd.DataFrame:
    """Zero-shot top-1 with the class prompts vs prompts + discovered descriptors."""
    rows = []
    for ds in _datasets(ctx, ("imagenet-val",)):
        for entry in ctx.models:
            res = concepts_run(ctx, entry, ds)
            m = res.metrics
            if "acc1_prompts" not in m:
                continue
            note = (f"{int(m['n_classes'])}-way among the processed classes only; descriptors = each class's most "
                    f"frequent discovered ones")
            n = int(m["n_images"])
            rows += [
                row("sammani2024-descriptors", entry, ds, "top-1", "base prompts", 100 * m["acc1_prompts"], "top-1 %",
                    n, note),
                row("sammani2024-descriptors", entry, ds, "top-1", "with descriptors",
                    100 * m["acc1_prompts_descriptors"], "top-1 %", n, note),
                row("sammani2024-descriptors", entry, ds, "top-1", "gain", 100 * m["acc1_gain"], "top-1 pt", n, note),
            ]
    return pd.DataFrame(rows)


TABLES.register("sammani2024-mi-auc", TableSpec(
    "sammani2024-mi-auc", "Sammani & Deligiannis 2024: mutual information and its AUC per model (PCA, K-means)",
    PAPER, sammani2024_mi_auc,
    (("ViT-B-16", "openai"), ("ViT-B-16", "dfn2b"), ("RN50", "openai"), ("ViT-L-14", "openai")), ("imagenet-val",),
    notes="Needs --descriptors. The reference notes transcribe only ViT-B/16-dfn of the paper's 13 models."),
    "Sammani & Deligiannis 2024: MI and AUC per model")
TABLES.register("sammani2024-descriptors", TableSpec(
    "sammani2024-descriptors", "Sammani & Deligiannis 2024: zero-shot top-1 with discovered descriptors vs base "
    "prompts", PAPER, sammani2024_descriptors,
    (("RN50", "openai"), ("RN50x16", "openai"), ("ViT-B-16", "openai"), ("ViT-L-14-336", "openai")),
    ("imagenet-val",), notes="Needs --descriptors."),
    "Sammani & Deligiannis 2024: accuracy with descriptors vs base prompts")
