"""Ge, Ren et al. (CVPR 2023), Hierarchy-CLIP: Tab. 1, Fig. 3 (AUROC), Tab. 3, Tab. 4, Tab. 5, Tab. 7.

Everything is computed by the task modules on one :class:`~analysis.tasks._context.TaskContext` per
(model, dataset) with the run's prompt set (its :class:`~analysis.classifier.ClassifierState`: image
features, name-only and ensemble logits): :func:`analysis.tasks.confidence.consistency_table` (S_T, S_B, the
low-confidence set O = O_T ∪ O_B, baselines), :func:`analysis.confidence.confidence_summary` (AUROC),
:func:`analysis.confidence.continuous_low_confidence` (Tab. 5's fixed-size sets) and
:func:`analysis.hierarchy.rerank` (reranking); each (model, dataset) is embedded once, in one decode pass
(original + flip), for all six tables.

Choices (the paper leaves them open; see shared/reference/hierarchy_clip.md §6):

- base classifier = name-only ``"{}"``; O = O_T ∪ O_B with T1/T2 = first/second 40 templates, horizontal
  flip (the confidence task's defaults); images unreadable raw or flipped are left out;
- hierarchy = the hierarchy task's defaults (top-5 of the name-only logits, all children, first-lemma
  parent, norm-variance pruning keeping 40% of the words, ranked over the 80 templates); classes map to
  WordNet by their ImageNet wnids; Tab. 4/5/7 use the prompt-ensembled variant (80 templates applied to
  each whole string; images outside the set keep the ensemble's top-1); candidates always from the
  name-only logits;
- Fig. 3 "ours" = S_T over the 80 single-template classifiers, correctness of the name-only prediction;
  "max logit ensemble" is judged against the ensemble's prediction;
- Tab. 5 sets = the k lowest S_T (stable ties), k = the paper's size scaled to the images used; "acc on
  low" = the base (ensemble) accuracy on the set; "acc on full" = hierarchy + ensemble with that set;
- ImageNet-R/-A are run 1000-way (``imagenet-r``, as the paper appears to) and on their 200-class
  subsets (``imagenet-r-200``), which the paper does not report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._checks import ClipauditError
from ..confidence import confidence_summary, continuous_low_confidence
from .core import TABLES, ModelEntry, ReproContext, TableSpec, row
from .options import TAB7_KEEP

if TYPE_CHECKING:
    from ..hierarchy import HierarchyResult
    from ..tasks._context import TaskContext

__all__ = [
    "GE_DATASETS", "TAB5_SIZES", "TAB7_KEEP", "GeBase", "ge_base", "hierarchy_eval", "ge2023_tab1", "ge2023_fig3",
    "ge2023_tab3", "ge2023_tab4", "ge2023_tab5", "ge2023_tab7",
]

PAPER = "Ge, Ren et al., Improving Zero-shot Generalization and Robustness of Multi-modal Models, CVPR 2023"
GE_DATASETS = ("imagenet-val", "imagenetv2", "imagenet-r", "imagenet-r-200", "imagenet-a", "imagenet-a-200",
               "imagenet-sketch")
TAB5_SIZES = (10000, 11000, 12000, 13000, 14000, 15000)  # of 50,000 ImageNet val images
TAB5_N = 50000
NOTE_200 = "200-class subset (timm's imagenet_*_indices): not reported by the paper"
#: the confidence task's perturbations (its defaults: the paper's horizontal flip)
VIEWS = ("hflip",)


@dataclass
class GeBase:
    """What every Ge table reads for one (model, dataset): the task context, self-consistency and WordNet nodes.

    Attributes
    ----------
    task : TaskContext
        Its ``state`` holds the image features, labels, name-only and ensemble logits (rows = ``table`` rows).
    table : DataFrame
        The self-consistency table (:func:`analysis.tasks.confidence.consistency_table`, the task's defaults).
    in_o : ndarray of bool
        Row is in the low-confidence set O = O_T ∪ O_B.
    nodes : list of ClassNode
        The classes mapped to WordNet.
    """

    task: TaskContext
    table: pd.DataFrame
    in_o: np.ndarray
    nodes: list[Any]

    @property
    def state(self) -> Any:
        return self.task.state


def _class_nodes(ctx: ReproContext, dataset: str, classnames: list[str]) -> list[Any]:
    """WordNet nodes of the classes: by their wnids for the ImageNet family (exact, also for the 200-class
    subsets), else :func:`analysis.hierarchy.map_dataset_classes` (ImageNet-1k ids or lemma lookup)."""
    from ..data import imagenet_family
    from ..data import wordnet as w
    from ..hierarchy import map_dataset_classes

    def compute() -> list[Any]:
        wn = ctx.memoise("wordnet", w.load_wordnet)
        if dataset not in imagenet_family.FAMILY:
            return map_dataset_classes(wn, classnames, dataset)[1]
        mapping = w.map_classes(wn, classnames, wnids=imagenet_family.class_wnids(dataset))
        return w.class_nodes(classnames, mapping.synsets)

    return ctx.memoise(("class_nodes", dataset, tuple(classnames)), compute)


def ge_base(ctx: ReproContext, entry: ModelEntry, dataset: str) -> GeBase:
    """The task context of (``entry``, ``dataset``), its self-consistency table and WordNet nodes (memoised)."""
    from ..tasks.confidence import ConfidenceOptions, consistency_table

    tc = ctx.task_context(entry, dataset)

    def compute() -> GeBase:
        table, _ = consistency_table(tc, ConfidenceOptions(perturbations=list(VIEWS)))
        return GeBase(tc, table, table["in_O"].to_numpy(bool), _class_nodes(ctx, dataset, list(tc.state.classnames)))

    return ctx.derived(tc, "ge_base", compute)


def hierarchy_eval(ctx: ReproContext, entry: ModelEntry, dataset: str, *, variant: str = "name-only",
                   keep_fraction: float | None = None, mask: np.ndarray | None = None,
                   mask_key: Any = "O") -> HierarchyResult:
    """:func:`analysis.hierarchy.rerank` on one (model, dataset): ``variant`` "name-only" (Tab. 1) or "ensemble"
    (Tab. 4), candidates from the name-only logits.

    ``mask`` defaults to O = O_T ∪ O_B; ``keep_fraction`` overrides the pruning of ``ctx.ge`` (Tab. 7).
    """
    from ..hierarchy import rerank

    base = ge_base(ctx, entry, dataset)
    options = ctx.ge.hierarchy_options(keep_fraction)
    tc = base.task

    def compute() -> HierarchyResult:
        model, cache = entry.model, ctx.cache
        return rerank(base.state, base.nodes, lambda texts: cache.text_features(model, texts),
                      lambda texts: cache.text_features_raw(model, texts),
                      mask=base.in_o if mask is None else mask, options=options, variant=variant,
                      candidates="name-only", templates=tc.templates, prune_templates=tc.templates)

    return ctx.derived(tc, ("hierarchy", variant, repr(options), mask_key), compute)


def _datasets(ctx: ReproContext, names: tuple[str, ...]) -> list[str]:
    found = [n for n in names if ctx.wants(n) and ctx.try_dataset(n) is not None]
    if not found:
        tried = {n: ctx.missing.get(n, "not requested") for n in names}
        raise ClipauditError("None of the datasets of this table was found: "
                             + " | ".join(f"{n}: {m}" for n, m in tried.items()))
    return found


def ge2023_tab1(ctx: ReproContext) -> pd.DataFrame:
    """Tab. 1: top-1 of the name-only classifier and after hierarchy reranking, on O (low) and all images."""
    rows = []
    for ds in _datasets(ctx, GE_DATASETS):
        for entry in ctx.models:
            m = hierarchy_eval(ctx, entry, ds).metrics
            note = NOTE_200 if ds.endswith("-200") else ""
            for name, key in (("low", "acc1_low"), ("full", "acc1")):
                rows.append(row("ge2023-tab1", entry, ds, name, "base", 100 * m[f"{key}_before"], "top-1 %", m["n"],
                                note))
                rows.append(row("ge2023-tab1", entry, ds, name, "hierarchy", 100 * m[f"{key}_after"], "top-1 %",
                                m["n"], note))
            rows.append(row("ge2023-tab1", entry, ds, "low", "|O| / N", 100 * m["low_fraction"], "%", m["n"],
                            "size of the low-confidence set (paper: implied ≈ 21% on ImageNet)"))
    return pd.DataFrame(rows)


FIG3_SCORES = (("ours", "S_T"), ("max logit", "max_logit_name_only"), ("max logit ensemble", "max_logit_ensemble"),
               ("ours (mean of S_T and S_B)", "S_TB"), ("max softmax", "msp_name_only"))


def ge2023_fig3(ctx: ReproContext) -> pd.DataFrame:
    """Fig. 3: correctness AUROC of S_T ("ours") vs max logit, name-only and with the prompt ensemble."""
    rows = []
    for ds in _datasets(ctx, ("imagenet-val",)):
        for entry in ctx.models:
            table = ge_base(ctx, entry, ds).table
            _, tables = confidence_summary(table, target_accuracy=None)
            scores = tables["scores"].set_index("score")
            for column, score in FIG3_SCORES:
                if score in scores.index:
                    rows.append(row("ge2023-fig3", entry, ds, "AUROC", column, scores.loc[score, "auroc"], "AUROC",
                                    len(table), f"score {score}, positives = correct "
                                                f"{scores.loc[score, 'prediction']} predictions"))
    return pd.DataFrame(rows)


def ge2023_tab3(ctx: ReproContext) -> pd.DataFrame:
    """Tab. 3: gain of hierarchy reranking over the name-only classifier per backbone (ImageNet val)."""
    rows = []
    for ds in _datasets(ctx, ("imagenet-val",)):
        for entry in ctx.models:
            m = hierarchy_eval(ctx, entry, ds).metrics
            for name, key in (("low", "acc1_low"), ("full", "acc1")):
                rows.append(row("ge2023-tab3", entry, ds, name, "gain",
                                100 * (m[f"{key}_after"] - m[f"{key}_before"]), "top-1 pt", m["n"]))
    return pd.DataFrame(rows)


def ge2023_tab4(ctx: ReproContext) -> pd.DataFrame:
    """Tab. 4: prompt ensemble alone vs hierarchy + ensemble, on O and on all images."""
    rows = []
    for ds in _datasets(ctx, GE_DATASETS):
        for entry in ctx.models:
            m = hierarchy_eval(ctx, entry, ds, variant="ensemble").metrics
            note = NOTE_200 if ds.endswith("-200") else ""
            for name, key in (("low", "acc1_low"), ("full", "acc1")):
                rows.append(row("ge2023-tab4", entry, ds, name, "ensemble", 100 * m[f"{key}_before"], "top-1 %",
                                m["n"], note))
                rows.append(row("ge2023-tab4", entry, ds, name, "hierarchy+ensemble", 100 * m[f"{key}_after"],
                                "top-1 %", m["n"], note))
    return pd.DataFrame(rows)


def ge2023_tab5(ctx: ReproContext) -> pd.DataFrame:
    """Tab. 5: continuous low-confidence sets (the k lowest S_T): threshold, accuracy on the set and overall."""
    rows = []
    for ds in _datasets(ctx, ("imagenet-val",)):
        for entry in ctx.models:
            base = ge_base(ctx, entry, ds)
            s_t = base.table["S_T"].to_numpy(float)
            n = len(s_t)
            for size in TAB5_SIZES:
                k = min(n, max(1, round(size * n / TAB5_N)))
                mask, thr = continuous_low_confidence(s_t, size=k)
                m = hierarchy_eval(ctx, entry, ds, variant="ensemble", mask=mask, mask_key=("lowest S_T", k)).metrics
                note = f"set = {k} lowest S_T of {n} images" + ("" if k == size else f" (paper: {size:,} of 50,000)")
                rows += [
                    row("ge2023-tab5", entry, ds, str(size), "threshold", thr, "S_T", n, note),
                    row("ge2023-tab5", entry, ds, str(size), "acc on low", 100 * m["acc1_low_before"], "top-1 %", n,
                        note + "; ensemble accuracy on the set"),
                    row("ge2023-tab5", entry, ds, str(size), "acc on low after", 100 * m["acc1_low_after"], "top-1 %",
                        n, note + "; hierarchy + ensemble on the set"),
                    row("ge2023-tab5", entry, ds, str(size), "acc on full", 100 * m["acc1_after"], "top-1 %", n,
                        note + "; hierarchy + ensemble, reranking the set"),
                ]
    return pd.DataFrame(rows)


def ge2023_tab7(ctx: ReproContext) -> pd.DataFrame:
    """Tab. 7: overall accuracy (hierarchy + ensemble on O) vs the fraction of WordNet words kept by pruning.

    ``ctx.ge.tab7_keep`` holds the fractions (default: the paper's); each row is labelled by its percentage.
    """
    rows = []
    for ds in _datasets(ctx, ("imagenet-val",)):
        for entry in ctx.models:
            for fraction in ctx.ge.tab7_keep:
                label = f"{fraction:.0%}"
                m = hierarchy_eval(ctx, entry, ds, variant="ensemble", keep_fraction=fraction).metrics
                rows.append(row("ge2023-tab7", entry, ds, label, "accuracy", 100 * m["acc1_after"], "top-1 %",
                                m["n"], "words of this dataset's hierarchy kept by norm-variance pruning"))
    return pd.DataFrame(rows)


_OPENAI = "openai"
_GE = {"views": VIEWS, "options": ("ge",)}
for _spec in (
    TableSpec("ge2023-tab1", "Ge et al. 2023, Tab. 1: zero-shot top-1 on the low-confidence set and the full set, "
              "CLIP vs Hierarchy-CLIP", PAPER, ge2023_tab1, (("ViT-B-16", _OPENAI),), GE_DATASETS, **_GE),
    TableSpec("ge2023-fig3", "Ge et al. 2023, Fig. 3: AUROC of self-consistency vs max logit", PAPER, ge2023_fig3,
              (("ViT-B-16", _OPENAI),), ("imagenet-val",), views=VIEWS),
    TableSpec("ge2023-tab3", "Ge et al. 2023, Tab. 3: hierarchy gain per CLIP backbone (ImageNet)", PAPER,
              ge2023_tab3, tuple((m, _OPENAI) for m in ("RN50", "RN101", "ViT-B-32", "ViT-B-16", "ViT-L-14")),
              ("imagenet-val",), **_GE),
    TableSpec("ge2023-tab4", "Ge et al. 2023, Tab. 4: prompt ensemble vs hierarchy + prompt ensemble", PAPER,
              ge2023_tab4, (("ViT-B-16", _OPENAI),), GE_DATASETS, **_GE),
    TableSpec("ge2023-tab5", "Ge et al. 2023, Tab. 5: continuous low-confidence set size vs threshold", PAPER,
              ge2023_tab5, (("ViT-B-16", _OPENAI),), ("imagenet-val",), **_GE),
    TableSpec("ge2023-tab7", "Ge et al. 2023, Tab. 7: accuracy vs fraction of WordNet kept by pruning", PAPER,
              ge2023_tab7, (("ViT-B-16", _OPENAI),), ("imagenet-val",), **_GE),
):
    TABLES.register(_spec.name, _spec, _spec.title)
