"""The demo model's own table: clipaudit-lit on Fashion-MNIST, end to end on any machine in minutes.

Zero-shot top-1 with the prompt ensemble, "a photo of a {}.", the bare name and the shipped fashion
prompts (:func:`analysis.zeroshot.zeroshot_table` on one task context per prompt set, sharing the image
features), and the self-consistency audit on the ensemble's context
(:func:`analysis.tasks.confidence.consistency_table` with the confidence task's defaults +
:func:`~analysis.confidence.confidence_summary`): AUROC of S_T and of the max-logit baselines, and the
low-confidence set O. The dataset is Fashion-MNIST's 10,000 test images (``fashion-mnist``: Debian's
folder, ``demo_root``, or download), or ``demo_dataset``.
There is no paper for the demo model: the reference column holds the accuracies of its model card
(``published.csv`` rows sourced to ``MODEL_CARD.md``, full test set), tied to the shipped heads' hash.
"""

from __future__ import annotations

import pandas as pd

from ..confidence import confidence_summary
from ..data import load_templates
from ..tasks.confidence import ConfidenceOptions, consistency_table
from .core import TABLES, ReproContext, TableSpec, row, zeroshot_metrics

__all__ = ["demo_fashion_mnist"]


def demo_fashion_mnist(ctx: ReproContext) -> pd.DataFrame:
    """Zero-shot accuracy for four prompt sets and the confidence audit of the demo model."""
    name, root = ctx.demo.demo_dataset, ctx.demo.demo_root
    tset = load_templates(ctx.templates)
    rows = []
    for entry in ctx.models:
        for column, templates in ((f"{tset.name} ensemble ({len(tset)})", tset), ("a photo of a {}.", "photo"),
                                  ("name only '{}'", "name_only"), ("fashion prompts", "fashion")):
            m = zeroshot_metrics(ctx, ctx.task_context(entry, name, templates, root=root))
            rows.append(row("demo-fashion-mnist", entry, name, "top-1", column, 100 * m["acc1"], "top-1 %",
                            m["n_images"], f"prompt set {m['templates']}"))
        tc = ctx.task_context(entry, name, tset, root=root)
        table = ctx.derived(tc, "consistency", lambda tc=tc: consistency_table(tc, ConfidenceOptions())[0])
        metrics, tables = confidence_summary(table, target_accuracy=None)
        scores = tables["scores"].set_index("score")
        n = len(table)
        for column, score in (("S_T", "S_T"), ("S_B", "S_B"), ("max logit", "max_logit_name_only"),
                              ("max logit ensemble", "max_logit_ensemble"), ("max softmax", "msp_name_only")):
            if score in scores.index:
                rows.append(row("demo-fashion-mnist", entry, name, "AUROC", column, scores.loc[score, "auroc"],
                                "AUROC", n, f"positives = correct {scores.loc[score, 'prediction']} predictions"))
        sets = tables["sets"].set_index("set")
        rows += [
            row("demo-fashion-mnist", entry, name, "low-confidence set O", "|O| / N", 100 * sets.loc["O", "fraction"],
                "%", n),
            row("demo-fashion-mnist", entry, name, "low-confidence set O", "name-only top-1 in O",
                100 * sets.loc["O", "accuracy_name_only_in"], "top-1 %", n),
            row("demo-fashion-mnist", entry, name, "low-confidence set O", "name-only top-1 outside O",
                100 * sets.loc["O", "accuracy_name_only_out"], "top-1 %", n),
        ]
    return pd.DataFrame(rows)


TABLES.register("demo-fashion-mnist", TableSpec(
    "demo-fashion-mnist", "clipaudit-lit on Fashion-MNIST: zero-shot accuracy and self-consistency confidence",
    "clipaudit demo model (this project)", demo_fashion_mnist, (("clipaudit-lit", None),), ("fashion-mnist",),
    notes="Runs on CPU in minutes; the reference numbers are the model card's (full test set), not a paper's.",
    views=tuple(ConfidenceOptions().perturbations), options=("demo",)),
    "the demo model's own table (Fashion-MNIST), runs anywhere in minutes")
