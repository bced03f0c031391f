"""``clipaudit confidence``: self-consistency confidence and the deployment confidence audit."""

from __future__ import annotations

import argparse
import math

from .._checks import ClipauditError
from . import _common as c

NAME = "confidence"
HELP = "self-consistency confidence (Ge et al. 2023): S_T, S_B, low-confidence set O, selective prediction"
DESCRIPTION = """\
Judge how far a zero-shot classifier can be trusted on each image (Ge, Ren et al., CVPR 2023, §4.1, §5.1).
The reference prediction is the name-only classifier (template "{}"). Per image:
  S_T  share of single-template classifiers (default: every template of --templates) agreeing with it
  S_B  share of image perturbations (default: horizontal flip) keeping it
  O    low-confidence set O_T ∪ O_B: the ensembles of T1 (first half of the templates), T2 (second
       half), T3 (all) and T4 (name only) disagree, or a perturbation changes the name-only top-1
Baselines: max cosine logit and max softmax probability (softmax at the model's logit scale) of the
name-only and the ensemble classifier. For every score: correctness AUROC, risk-coverage AURC and E-AURC,
ECE (15 bins), selective accuracy at coverage 0.5-1.0, and the threshold keeping the most images at
--target-accuracy, with bootstrap intervals. Writes the per-image table and the summary tables to
RESULTS_DIR/confidence/.

examples:
  clipaudit confidence                                  # clipaudit-lit on the bundled subset
  clipaudit confidence --perturb hflip vflip rot:10 --target-accuracy 0.9
  clipaudit confidence --splits 0.25,0.25,0.25,0.25 --low-size 200
  clipaudit confidence --model ViT-B-16 --pretrained openai --dataset imagenet --root /data/imagenet
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..data.perturb import PERTURBATION_HELP

    c.add_model_args(parser)
    c.add_dataset_args(parser)
    c.add_prompt_args(parser)
    g = parser.add_argument_group("self-consistency")
    g.add_argument(
        "--perturb",
        nargs="*",
        default=["hflip"],
        metavar="NAME",
        help=f"image perturbations for S_B and O_B: {PERTURBATION_HELP}; default: hflip; "
        "give --perturb with no name to skip S_B (then O = O_T)",
    )
    g.add_argument(
        "--splits",
        default=None,
        help="prompt sets T1..Tk before 'all' and 'name only': fractions of the template list "
        "('0.5,0.5' = the paper's halves, the default) or index groups ('0-39;40-79', "
        "'0,2,5-9;10-19')",
    )
    g.add_argument(
        "--st-templates", default=None, metavar="INDICES", help="templates counted by S_T, e.g. '0-39' (default: all)"
    )
    low = g.add_mutually_exclusive_group()
    low.add_argument(
        "--low-threshold",
        type=float,
        default=None,
        help="also report the continuous set S_T < THRESHOLD (Alg. 1 with tau_t)",
    )
    low.add_argument(
        "--low-size",
        type=int,
        default=None,
        help="also report the SIZE images with the lowest S_T (the reference code's variant)",
    )
    d = parser.add_argument_group("deployment thresholds")
    t = d.add_mutually_exclusive_group()
    t.add_argument(
        "--target-accuracy", type=float, default=None, help="accuracy required on the kept images (default: 0.95)"
    )
    t.add_argument("--max-risk", type=float, default=None, help="maximum error rate on the kept images")
    d.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    d.add_argument("--ci", type=float, default=0.95, help="confidence level of the intervals (default: 0.95)")
    d.add_argument("--seed", type=int, default=0, help="bootstrap seed (default: 0)")
    c.add_output_args(parser)


def parse_indices(spec: str, option: str) -> list[int]:
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


def parse_splits(spec: str | None) -> list[float] | list[list[int]] | None:
    """``--splits``: None, fractions '0.5,0.5', or index groups '0-39;40-79'."""
    if spec is None:
        return None
    if ";" not in spec and "-" not in spec and "." in spec:
        try:
            return [float(x) for x in spec.split(",")]
        except ValueError:
            raise ClipauditError(
                f"--splits: {spec!r} is neither fractions ('0.5,0.5') nor index groups ('0-39;40-79')."
            ) from None
    return [parse_indices(group, "--splits") for group in spec.split(";") if group.strip()]


def _fmt(x: float, nd: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def run(args: argparse.Namespace) -> int:
    from ..confidence import SCORES, confidence_summary, run_confidence
    from ..results import write_run

    splits = parse_splits(args.splits)
    st_templates = None if args.st_templates is None else parse_indices(args.st_templates, "--st-templates")
    target = None if args.max_risk is not None else (0.95 if args.target_accuracy is None else args.target_accuracy)
    model = c.load_model_from_args(args)
    dataset = c.load_dataset_from_args(args)
    cache = c.cache_from_args(args)
    result = run_confidence(
        model,
        dataset,
        cache,
        templates=args.templates,
        perturbations=args.perturb,
        splits=splits,
        st_templates=st_templates,
    )
    metrics, tables = confidence_summary(
        result.table,
        target_accuracy=target,
        max_risk=args.max_risk,
        n_boot=args.n_boot,
        seed=args.seed,
        confidence_level=args.ci,
        low_threshold=args.low_threshold,
        low_size=args.low_size,
    )
    metrics["n_skipped"] = len(result.skipped)
    path = write_run(
        args.results_dir,
        task="confidence",
        dataset=dataset.name,
        model=model.info.name,
        pretrained=model.info.pretrained,
        metrics=metrics,
        tables={"per_sample": result.table, **tables},
        extra={
            "model_info": model.info.as_dict(),
            "dataset_fingerprint": dataset.fingerprint(),
            "classnames": dataset.classnames,
            "skipped": result.skipped,
            **result.info,
            "labelled_prediction": {name: pred for name, (pred, _) in SCORES.items()},
            "bootstrap": {"n_boot": args.n_boot, "seed": args.seed, "confidence_level": args.ci},
        },
    )
    c.print_skipped(result.skipped)
    _print_summary(model.info.name, dataset.name, result.info, metrics, tables)
    print(f"results: {path}")
    return 0


def _print_summary(model: str, dataset: str, info: dict, metrics: dict, tables: dict) -> None:
    perts = ", ".join(info["perturbations"]) or "none"
    print(
        f"self-consistency confidence of {model} on {dataset} ({metrics['n_images']} images, "
        f"{info['n_templates']} templates from {info['templates']}, perturbations: {perts}; "
        f"MSP = softmax({info['msp_scale']:g} x cosine))"
    )
    print(f"  accuracy: name-only {_fmt(metrics['acc_name_only'])}, ensemble {_fmt(metrics['acc_ensemble'])}")
    n = metrics["n_images"]
    print(
        f"  low-confidence set: |O_T| {metrics['size_O_T']}, |O_B| {metrics['size_O_B']}, |O| {metrics['size_O']} "
        f"({metrics['size_O'] / max(n, 1):.1%}); name-only accuracy on O {_fmt(metrics['acc_name_only_in_O'])}, "
        f"outside O {_fmt(metrics['acc_name_only_out_O'])}"
    )
    print(f"  {'score':<20} {'labels':<10} {'AUROC':>6} {'AURC':>6} {'E-AURC':>6} {'ECE':>6}")
    for r in tables["scores"].to_dict("records"):
        print(
            f"  {r['score']:<20} {r['prediction']:<10} {_fmt(r.get('auroc')):>6} {_fmt(r.get('aurc')):>6} "
            f"{_fmt(r.get('e_aurc')):>6} {_fmt(r.get('ece')):>6}"
        )
    thr = tables["thresholds"]
    if len(thr):
        level = thr["confidence_level"].iloc[0]
        print(
            f"  keep score >= threshold for accuracy >= {thr['target_accuracy'].iloc[0]:.3f} "
            f"({level:.0%} bootstrap intervals, threshold fixed):"
        )
        for r in thr.to_dict("records"):
            if not r["achievable"]:
                print(f"  {r['score']:<20} not reachable at any coverage")
                continue
            print(
                f"  {r['score']:<20} threshold {r['threshold']:.4g}  coverage {r['coverage']:.3f} "
                f"[{_fmt(r['coverage_ci_low'])}, {_fmt(r['coverage_ci_high'])}]  accuracy {r['accuracy']:.3f} "
                f"[{_fmt(r['accuracy_ci_low'])}, {_fmt(r['accuracy_ci_high'])}]"
            )
    classes = tables["classes"].head(5)
    if len(classes):
        names = [f"{r.get('class_name', r['class'])} ({r['frac_in_O']:.0%})" for r in classes.to_dict("records")]
        print(f"  most often low-confidence classes (by {classes['grouped_by'].iloc[0]}): {', '.join(names)}")
