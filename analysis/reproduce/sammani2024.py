"""Sammani & Deligiannis (NeurIPS 2024), mutual knowledge: MI and AUC per model, and accuracy with descriptors.

Both tables come from one run of the concepts pipeline (:func:`analysis.concepts.pipeline.run_concepts`,
configured as the concepts task configures it) per model on the task context of (model, ImageNet val, the
run's prompt set), memoised across the two tables; the zero-shot top-1 next to MI is
:func:`analysis.zeroshot.zeroshot_table` on the same context's classifier state. The options are the concepts
task's (``ctx.concepts``: ``classes`` = names, ``n_classes`` = how many when no names are given, in class
order, default all; ``images_per_class``, default the paper's 50). The descriptor pool must be given
(``descriptors``): the paper's is most likely Menon & Vondrick's ImageNet descriptors, which clipaudit does not
ship.

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

from .._checks import ClipauditError, close_matches
from .core import TABLES, ModelEntry, ReproContext, TableSpec, row, zeroshot_metrics
from .ge2023 import _datasets

__all__ = ["concept_classes", "concepts_run", "sammani2024_mi_auc", "sammani2024_descriptors"]

PAPER = ("Sammani & Deligiannis, Interpreting and Analysing CLIP's Zero-Shot Image Classification via Mutual "
         "Knowledge, NeurIPS 2024")


def concept_classes(ctx: ReproContext, dataset: Any) -> list[str]:
    """The classes explained: ``ctx.concepts.classes`` (checked), else the first ``n_classes`` (default: all)
    classes present in ``dataset`` whose name is unique, in class order."""
    names = list(dataset.classnames)
    counts = Counter(names)
    o = ctx.concepts
    if o.classes:
        for c in o.classes:
            if c not in counts:
                near = close_matches(c, names)
                raise ClipauditError(f"--classes: {c!r} is not a class of {dataset.name!r}."
                                     + (f" Did you mean {', '.join(map(repr, near))}?" if near else ""))
            if counts[c] > 1:
                raise ClipauditError(f"--classes: {c!r} names {counts[c]} classes of {dataset.name!r}; the concepts "
                                     "pipeline identifies classes by name, so it cannot be explained.")
        return list(dict.fromkeys(o.classes))
    labels = np.asarray(dataset.labels)
    present = np.unique(labels[labels >= 0])
    classes = [names[i] for i in present if counts[names[i]] == 1]
    return classes[:o.n_classes] if o.n_classes else classes


def concepts_run(ctx: ReproContext, entry: ModelEntry, dataset: str) -> Any:
    """The concepts pipeline on ``dataset`` for one model (memoised across the two tables): a ``ConceptsResult``."""
    from ..concepts.descriptors import load_descriptors
    from ..concepts.pipeline import run_concepts

    if ctx.concepts.descriptors is None:
        raise ClipauditError("The Sammani & Deligiannis tables need a descriptor pool: pass --descriptors FILE "
                             "(e.g. Menon & Vondrick's descriptors_imagenet.json, a {class: [descriptors]} JSON); "
                             "clipaudit ships none for ImageNet.")
    tc = ctx.task_context(entry, dataset)

    def compute() -> Any:
        classes = concept_classes(ctx, tc.dataset)
        if not classes:
            raise ClipauditError(f"No usable class in {dataset!r} for the concepts pipeline.")
        o = ctx.concepts
        return run_concepts(tc.model, tc.dataset, tc.cache, load_descriptors(o.descriptors), classes=classes,
                            images_per_class=o.images_per_class, templates=tc.templates,
                            config=o.config(ctx.cache.batch_size), figure_images=0)

    return ctx.derived(tc, ("concepts", repr(ctx.concepts)), compute)


def sammani2024_mi_auc(ctx: ReproContext) -> pd.DataFrame:
    """MI and AUC (PCA and K-means concepts) and ImageNet top-1 per model."""
    rows = []
    for ds in _datasets(ctx, ("imagenet-val",)):
        for entry in ctx.models:
            res = concepts_run(ctx, entry, ds)
            zs = zeroshot_metrics(ctx, ctx.task_context(entry, ds))
            m, n_cls = res.metrics, int(res.metrics["n_classes"])
            note = f"mean over {n_cls} classes (up to {res.info['images_per_class']} images each)"
            rows.append(row("sammani2024-mi-auc", entry, ds, "mean", "top-1", 100 * zs["acc1"], "top-1 %",
                            zs["n_images"], f"zero-shot, prompt set {zs['templates']}"))
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
    notes="Needs --descriptors. The reference notes transcribe only ViT-B/16-dfn of the paper's 13 models.",
    options=("concepts",)),
    "Sammani & Deligiannis 2024: MI and AUC per model")
TABLES.register("sammani2024-descriptors", TableSpec(
    "sammani2024-descriptors", "Sammani & Deligiannis 2024: zero-shot top-1 with discovered descriptors vs base "
    "prompts", PAPER, sammani2024_descriptors,
    (("RN50", "openai"), ("RN50x16", "openai"), ("ViT-B-16", "openai"), ("ViT-L-14-336", "openai")),
    ("imagenet-val",), notes="Needs --descriptors.", options=("concepts",)),
    "Sammani & Deligiannis 2024: accuracy with descriptors vs base prompts")
