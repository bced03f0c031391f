"""Task ``confidence``: self-consistency confidence (Ge, Ren et al., CVPR 2023) and deployment thresholds.

Its typed output, :class:`LowConfidenceSet`, is what the hierarchy and concepts tasks read (no DataFrame
column names cross task boundaries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._checks import ClipauditError
from . import register
from ._options import option
from ._task import Task, TaskResult

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ConfidenceOptions", "LowConfidenceSet", "TASK", "parse_indices", "parse_splits", "low_confidence_set",
           "consistency_table", "confidence_table_for"]

PERTURBATION_HELP = ("image perturbations for S_B and O_B: none | hflip | vflip | rot:DEG | crop:F (e.g. rot:10, "
                     "crop:0.9); give the flag with no name to skip S_B (then O = O_T)")


def parse_indices(spec: str, option: str = "--st-templates") -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7] (ranges inclusive)."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if "-" in part:
                a, b = (int(x) for x in part.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(part))
        except ValueError:
            raise ClipauditError(
                f"{option}: {part!r} in {spec!r} is not an index or a range A-B (e.g. '0-39' or '0,2,5-9')."
            ) from None
    return out


def parse_splits(spec: str) -> list[float] | list[list[int]]:
    """``--splits``: fractions '0.5,0.5' or index groups '0-39;40-79'."""
    if ";" not in spec and "-" not in spec and "." in spec:
        try:
            return [float(x) for x in spec.split(",")]
        except ValueError:
            raise ClipauditError(
                f"--splits: {spec!r} is neither fractions ('0.5,0.5') nor index groups ('0-39;40-79')."
            ) from None
    return [parse_indices(group, "--splits") for group in spec.split(";") if group.strip()]


@dataclass
class ConfidenceOptions:
    perturbations: list[str] = option(factory=lambda: ["hflip"], flag="--perturb", nargs="*", metavar="NAME",
                                      help=PERTURBATION_HELP)
    splits: list[Any] | None = option(None, parse=parse_splits, metavar="SPEC",
                                      help="prompt sets T1..Tk before 'all' and 'name only': fractions of the "
                                           "template list ('0.5,0.5' = the paper's halves, the default when "
                                           "none) or index groups ('0-39;40-79')")
    st_templates: list[int] | None = option(None, parse=parse_indices, metavar="INDICES",
                                            help="templates counted by S_T, e.g. '0-39' (none: all)")
    target_accuracy: float | None = option(0.95, low=0.0, high=1.0,
                                           help="accuracy the deployment threshold must keep on the kept images")
    max_risk: float | None = option(None, low=0.0, high=1.0,
                                    help="or the maximum error rate on the kept images (replaces "
                                         "--target-accuracy when given)")
    n_boot: int = option(1000, low=1, help="bootstrap resamples of the threshold intervals")
    ci: float = option(0.95, low=0.5, high=0.999, help="confidence level of the intervals")
    boot_seed: int = option(0, help="bootstrap seed")
    low_threshold: float | None = option(None, help="also report the continuous set S_T < THRESHOLD (Alg. 1 "
                                                    "with tau_t)")
    low_size: int | None = option(None, low=1, help="also report the SIZE images with the lowest S_T (the "
                                                    "reference code's variant)")


@dataclass(frozen=True)
class LowConfidenceSet:
    """The self-consistency verdict per image, for later tasks.

    Attributes
    ----------
    index : ndarray of shape (n,)
        Dataset indices of the judged images.
    in_o : ndarray of shape (n,) of bool
        Image is in the low-confidence set O = O_T ∪ O_B.
    labels : ndarray of shape (n,)
        True classes (-1: none).
    """

    index: np.ndarray
    in_o: np.ndarray
    labels: np.ndarray
    table: Any = None  # the per-image self-consistency table (scores, predictions, correctness)
    options: Any = None  # the ConfidenceOptions it was computed with

    def mask_for(self, index: np.ndarray) -> np.ndarray:
        """``in_o`` aligned with dataset indices ``index`` (an image not judged counts as low-confidence)."""
        import numpy as np

        lookup = dict(zip(self.index.tolist(), self.in_o.tolist()))
        return np.array([lookup.get(int(i), True) for i in index], bool)

    def classes_by_rate(self) -> list[int]:
        """Labelled classes, most often in O first (ties: lower class index)."""
        import numpy as np

        lab = self.labels >= 0
        classes = np.unique(self.labels[lab])
        rates = [float(self.in_o[lab][self.labels[lab] == c].mean()) for c in classes]
        order = sorted(range(len(classes)), key=lambda k: (-rates[k], int(classes[k])))
        return [int(classes[k]) for k in order]


def consistency_table(ctx: Any, options: ConfidenceOptions) -> tuple[Any, list[str]]:
    """The per-image self-consistency table of the run (and the perturbations used), from the shared state."""

    from ..confidence import self_consistency_table
    from ..data import get_perturbation

    s = ctx.state
    if s.per_class_prompts:
        raise ClipauditError(f"--templates {s.templates!r} is a per-class (CuPL) prompt set; self-consistency "
                             "needs templates shared by all classes (e.g. openai_imagenet).")
    perts = list(dict.fromkeys(get_perturbation(p).name for p in options.perturbations))
    perts = [p for p in perts if p != "none"]
    feats = ctx.images(perts)
    perturbed = {p: feats[p].features[s.index] for p in perts}  # rows = dataset indices
    table = self_consistency_table(
        s.features, s.per_template, s.name_only, perturbed=perturbed, labels=s.labels, msp_scale=s.scale,
        splits=options.splits, st_templates=options.st_templates, classnames=s.classnames, index=s.index)
    return table, perts


def low_confidence_set(ctx: Any) -> LowConfidenceSet:
    """The confidence task's set O from this run, or O computed here with the default options."""

    done = ctx.output("confidence") or ctx.outputs.get("confidence (defaults)")
    if done is not None:
        return done
    options = ConfidenceOptions()
    table, _ = consistency_table(ctx, options)
    done = LowConfidenceSet(table["index"].to_numpy(), table["in_O"].to_numpy(bool), table["label"].to_numpy(),
                            table, options)
    ctx.outputs["confidence (defaults)"] = done  # shared by the later tasks of this run
    return done


def confidence_table_for(ctx: Any) -> tuple[Any, ConfidenceOptions]:
    """The per-image confidence table of the run and its options (the confidence task's, else the defaults)."""
    found = low_confidence_set(ctx)
    return found.table, found.options


def run(ctx: Any, options: ConfidenceOptions) -> TaskResult:

    from ..confidence import confidence_summary, score_properties

    table, perts = consistency_table(ctx, options)
    s = ctx.state
    target = None if options.max_risk is not None else options.target_accuracy
    metrics, tables = confidence_summary(table, target_accuracy=target, max_risk=options.max_risk,
                                         n_boot=options.n_boot, seed=options.boot_seed, confidence_level=options.ci,
                                         low_threshold=options.low_threshold, low_size=options.low_size)
    metrics["n_skipped"] = len(s.skipped)
    info = {"classnames": s.classnames, "skipped": s.skipped, "templates": s.templates,
            "n_templates": int(len(s.per_template)), "perturbations": perts, "logit_scale": s.scale,
            "logit_bias": s.bias, "msp_scale": s.scale, "scores": score_properties(), **table.attrs,
            "bootstrap": {"n_boot": options.n_boot, "seed": options.boot_seed, "confidence_level": options.ci}}
    value = LowConfidenceSet(table["index"].to_numpy(), table["in_O"].to_numpy(bool), table["label"].to_numpy(),
                             table, options)
    return TaskResult(metrics, {"per_sample": table, **tables}, info=info, value=value)


def _fmt(x: Any, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def summary(result: TaskResult) -> str:
    """Console summary: accuracies, the set O, the score table and the thresholds."""
    m, info, tables = result.metrics, result.info, result.tables
    n = m["n_images"]
    lines = [
        f"  perturbations: {', '.join(info['perturbations']) or 'none'}; MSP = softmax({info['msp_scale']:g} x cosine)",
        f"  accuracy: name-only {_fmt(m['acc_name_only'])}, ensemble {_fmt(m['acc_ensemble'])}",
        f"  low-confidence set: |O_T| {m['size_O_T']}, |O_B| {m['size_O_B']}, |O| {m['size_O']} "
        f"({m['size_O'] / max(n, 1):.1%}); name-only accuracy on O {_fmt(m['acc_name_only_in_O'])}, "
        f"outside O {_fmt(m['acc_name_only_out_O'])}",
        f"  {'score':<20} {'labels':<10} {'AUROC':>6} {'AURC':>6} {'E-AURC':>6} {'ECE':>6}",
    ]
    for r in tables["scores"].to_dict("records"):
        lines.append(f"  {r['score']:<20} {r['prediction']:<10} {_fmt(r.get('auroc')):>6} {_fmt(r.get('aurc')):>6} "
                     f"{_fmt(r.get('e_aurc')):>6} {_fmt(r.get('ece')):>6}")
    thr = tables["thresholds"]
    if len(thr):
        lines.append(f"  in-sample thresholds for accuracy >= {thr['target_accuracy'].iloc[0]:.3f} (chosen and "
                     f"measured on these images, {thr['confidence_level'].iloc[0]:.0%} bootstrap intervals; `clipaudit "
                     "deployment` gives held-out, guaranteed ones):")
        for r in thr.to_dict("records"):
            if not r["achievable"]:
                lines.append(f"  {r['score']:<20} not reachable at any coverage")
                continue
            rule = str(r.get("keep_when") or "score >= threshold").replace("threshold", f"{r['threshold']:.4g}")
            lines.append(f"  {r['score']:<20} keep {rule}  coverage {r['coverage']:.3f} "
                         f"[{_fmt(r['coverage_ci_low'])}, {_fmt(r['coverage_ci_high'])}]  accuracy "
                         f"{r['accuracy']:.3f} [{_fmt(r['accuracy_ci_low'])}, {_fmt(r['accuracy_ci_high'])}]")
    classes = tables["classes"].head(5)
    if len(classes):
        names = [f"{r.get('class_name', r['class'])} ({r['frac_in_O']:.0%})" for r in classes.to_dict("records")]
        lines.append(f"  most often low-confidence classes (by {classes['grouped_by'].iloc[0]}): {', '.join(names)}")
    return "\n".join(lines)


TASK = register(Task(
    name="confidence",
    title="Self-consistency confidence",
    help="self-consistency confidence (Ge et al. 2023): S_T, S_B, low-confidence set O, selective prediction",
    description="""\
Judge how far a zero-shot classifier can be trusted on each image (Ge, Ren et al., CVPR 2023, §4.1, §5.1).
The reference prediction is the name-only classifier (template "{}"). Per image:
  S_T  share of single-template classifiers (default: every template of --templates) agreeing with it
  S_B  share of image perturbations (default: horizontal flip) keeping it
  O    low-confidence set O_T ∪ O_B: the ensembles of T1 (first half of the templates), T2 (second
       half), T3 (all) and T4 (name only) disagree, or a perturbation changes the name-only top-1
Baselines: max cosine logit and max softmax probability (softmax at the model's logit scale) of the
name-only and the ensemble classifier. For every registered confidence score: correctness AUROC,
risk-coverage AURC and E-AURC, ECE (15 bins), selective accuracy at coverage 0.5-1.0, and the threshold
keeping the most images at --target-accuracy, with bootstrap intervals.

examples:
  clipaudit confidence                                  # clipaudit-lit on the bundled subset
  clipaudit confidence --perturb hflip vflip rot:10 --target-accuracy 0.9
  clipaudit confidence --splits 0.25,0.25,0.25,0.25 --low-size 200
  clipaudit confidence --model ViT-B-16 --pretrained openai --dataset imagenet --root /data/imagenet
""",
    options=ConfidenceOptions,
    run=run,
    headline=("acc_name_only", "auroc_S_T", "aurc_S_T", "auroc_msp_ensemble", "size_O"),
    views=lambda o: o.perturbations,
    summary=summary,
    order=20,
))
