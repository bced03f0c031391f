"""Task ``deployment``: a deployment audit with guarantees (thresholds, calibration, conformal sets, a policy).

The evaluation images are split once, stratified and seeded, into a calibration part and a held-out test
part. Everything is *chosen* on the calibration part and *reported* on the test part:

- for every registered confidence score, the threshold whose selective accuracy is >= the target with
  probability >= 1 - delta over the draw of the calibration data (Learn-then-Test fixed-sequence testing by
  default, or SGR; :mod:`analysis.guarantees`), and which score to recommend (the guaranteed one keeping
  the most calibration images);
- a temperature for the ensemble logits (NLL; :mod:`analysis.calibration`), with ECE / NLL / Brier before
  and after on the test part, against the model's own logit scale and CLIP_benchmark's fixed 100;
- split-conformal prediction sets (APS or RAPS; :mod:`analysis.conformal`) at level 1 - alpha.

Its outputs: a verdict in words (first in the report and in the terminal), the tables behind it, and
``deployment_policy.json``, which ``clipaudit apply`` runs on new images.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import register
from ._options import option
from ._task import Task, TaskResult, TaskSkipped

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DeploymentOptions", "TASK", "calibration_split", "verdict_lines"]


@dataclass
class DeploymentOptions:
    target_accuracy: float = option(0.95, low=0.0, high=1.0, aliases=(),
                                    help="accuracy the kept images must reach (with probability >= 1 - delta)")
    delta: float = option(0.1, low=0.001, high=0.5,
                          help="allowed probability that the guarantee fails over the draw of the calibration data")
    method: str = option("ltt", choices=("ltt", "sgr"),
                         help="multiple-testing correction over thresholds: ltt = Learn-then-Test fixed-sequence "
                              "testing (Angelopoulos et al. 2021), sgr = Geifman & El-Yaniv 2017 binary search")
    ltt_starts: int = option(3, low=1, help="Learn-then-Test: start points the fixed sequence spreads delta over "
                                            "(the fallback procedure; 1 = plain fixed-sequence testing)")
    calibration_fraction: float = option(0.5, low=0.1, high=0.9,
                                         help="share of the evaluation images used to choose (the rest is held "
                                              "out to report on)")
    split_seed: int = option(0, help="seed of the stratified calibration / test split")
    alpha: float = option(0.1, low=0.001, high=0.5, help="conformal sets miss the true class at most this often")
    conformal: str = option("aps", choices=("aps", "raps"), help="conformal score: APS (Romano et al. 2020) or "
                                                                 "RAPS (Angelopoulos et al. 2021)")
    raps_lambda: float = option(0.01, low=0.0, help="RAPS rank penalty")
    raps_k_reg: int = option(5, low=0, help="RAPS: ranks below this are not penalised")
    calibration_dataset: str | None = option(None, help="calibrate on all of this dataset (name or path) instead of a "
                                                        "part of the evaluation data, and report on all of the latter")
    shift_dataset: str | None = option(None, help="also apply the chosen threshold and conformal quantile to "
                                                  "all of this dataset (name or path) and say whether they still hold")


def calibration_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row positions of the calibration and test parts: stratified by label when every class has 2+ rows."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    counts = np.unique(labels, return_counts=True)[1]
    stratify = labels if len(counts) > 1 and counts.min() >= 2 else None
    cal, test = train_test_split(rows, train_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(cal), np.sort(test)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def verdict_lines(info: dict[str, Any], model: str = "") -> list[str]:
    """The answer in words: which score and threshold to deploy and what it keeps, or why nothing qualifies."""
    v = info["verdict"]
    who = f"{model}: " if model else ""
    head = (f"{who}at target accuracy {_pct(v['target_accuracy'])} with confidence {_pct(1 - v['delta'])} "
            f"({v['method_name']}, {v['n_cal']} calibration images)")
    if v["score"] is not None:
        lines = [f"{head}: deploy '{v['score']}' {v['keep_when']}. It keeps {_pct(v['cal_coverage'])} of the "
                 f"calibration images; on the {v['n_test']} held-out images: accuracy {_pct(v['test_accuracy'])}, "
                 f"coverage {_pct(v['test_coverage'])}."]
    else:
        lines = [f"{head}: no confidence score can guarantee this. The best bound reached is accuracy >= "
                 f"{_pct(v['best_guaranteed_accuracy'])} (score '{v['best_score']}'); lower the target, raise delta, "
                 "or calibrate on more images."]
    c = info.get("conformal")
    if c:
        lines.append(f"Prediction sets ({c['method'].upper()}, level {_pct(1 - c['alpha'])}): held-out coverage "
                     f"{_pct(c['test_coverage'])}, mean set size {c['mean_size']:.2f}, singletons "
                     f"{_pct(c['singleton_fraction'])}.")
        h = c.get("hierarchical") or {}
        if h.get("available") and h.get("coverage") is not None:
            common = ", ".join(a["answer_name"] for a in (h.get("top_ancestors") or [])[:3]) or "none"
            lines.append(f"Answering the WordNet ancestor when a set holds several classes: correct for "
                         f"{_pct(h['coverage'])} of held-out images (the set's guarantee is a lower bound), a single "
                         f"class for {_pct(h['class_fraction'])}; most common ancestors: {common}.")
    t = info.get("temperature")
    if t:
        lines.append(f"Temperature scaling: T = {t['temperature']:.3g}; held-out ECE {_pct(t['ece_before'])} -> "
                     f"{_pct(t['ece_after'])}, NLL {t['nll_before']:.3f} -> {t['nll_after']:.3f}.")
    s = info.get("shift")
    if s:
        lines.append(s["sentence"])
    return lines


def _score_arrays(table: Any, name: str, props: dict[str, Any]) -> tuple[Any, Any]:
    """(score oriented so that higher = more confident, correctness of the prediction it labels)."""
    import numpy as np

    s = table[name].to_numpy(np.float64)
    if not props.get("higher_is_more_confident", True):
        s = -s
    correct = table[f"correct_{props['prediction']}"].to_numpy(dtype=bool)
    return s, correct


def run(ctx: Any, o: DeploymentOptions) -> TaskResult:
    import dataclasses
    import json

    import numpy as np
    import pandas as pd

    from .._checks import ClipauditError
    from ..calibration import calibration_metrics, fit_temperature, probabilities
    from ..confidence import score_properties
    from ..conformal import conformal_quantile, conformal_scores, prediction_sets, set_metrics
    from ..guarantees import guaranteed_threshold, selective_outcome
    from ..provenance import data_identity, prompt_identity
    from .confidence import confidence_table_for, consistency_table

    s = ctx.state
    s.check_labelled("The deployment audit")
    table, conf_options = confidence_table_for(ctx)
    order = np.searchsorted(s.index, table["index"].to_numpy())  # table rows -> state rows
    z = s.logits[order]
    cal_data = data_identity(ctx.dataset)
    if o.calibration_dataset:  # calibrate on another dataset, report on all of this one
        cal_ctx = _other_context(ctx, o.calibration_dataset, conf_options)
        if cal_ctx.dataset.root.fingerprint() == ctx.dataset.root.fingerprint():
            raise ClipauditError("--calibration-dataset overlaps the evaluation data (same images): nothing would be "
                                 "held out; leave it out to split the evaluation data instead.")
        if list(cal_ctx.dataset.classnames) != list(ctx.dataset.classnames):
            raise ClipauditError(f"--calibration-dataset {o.calibration_dataset!r} has other classes than the "
                                 "evaluation data; the threshold and quantile would not carry over.")
        cal_table, _ = consistency_table(cal_ctx, conf_options)
        cs = cal_ctx.state
        cal_z = cs.logits[np.searchsorted(cs.index, cal_table["index"].to_numpy())]
        table = pd.concat([cal_table, table], ignore_index=True)
        z = np.concatenate([cal_z, z])
        cal, test = np.arange(len(cal_table)), np.arange(len(cal_table), len(table))
        cal_data = data_identity(cal_ctx.dataset)
    labels = table["label"].to_numpy()
    if not o.calibration_dataset:
        cal, test = calibration_split(labels, o.calibration_fraction, o.split_seed)
    if len(cal) < 10 or len(test) < 10:
        raise TaskSkipped(f"a guarantee needs at least 10 calibration and 10 held-out images; the data has "
                          f"{len(table)} ({len(cal)} / {len(test)} after the split)")
    props = score_properties()
    rows, best = [], None
    for name, p in props.items():
        if name not in table.columns:
            continue
        score, correct = _score_arrays(table, name, p)
        if not np.isfinite(score).all():
            continue
        g = guaranteed_threshold(score[cal], correct[cal], target_accuracy=o.target_accuracy, delta=o.delta,
                                 method=o.method, ltt_starts=o.ltt_starts)
        out = selective_outcome(score[test], correct[test], g.threshold) if g.achievable else None
        threshold = None if g.threshold is None else (g.threshold if p.get("higher_is_more_confident", True)
                                                      else -g.threshold)
        rows.append({"score": name, "prediction": p["prediction"], "achievable": g.achievable,
                     "threshold": threshold, "keep_when": "score >= threshold" if p.get("higher_is_more_confident",
                                                                                        True) else "score <= threshold",
                     "cal_coverage": g.coverage, "cal_selected": g.n_selected, "cal_errors": g.errors,
                     "error_bound": g.bound, "best_error_bound": g.best_bound,
                     "test_coverage": None if out is None else out.coverage,
                     "test_accuracy": None if out is None else out.accuracy,
                     "test_kept": None if out is None else out.n_kept})
        if g.achievable and (best is None or g.coverage > best["cal_coverage"]):
            best = rows[-1]
    thresholds = pd.DataFrame(rows)
    method_name = {"ltt": "Learn-then-Test fixed-sequence testing", "sgr": "SGR binary search"}[o.method]
    if best is not None:
        rule = best["keep_when"].replace("threshold", f"{best['threshold']:.4g}")
        verdict = {"score": best["score"], "keep_when": f"(keep an image when {rule})", "threshold": best["threshold"],
                   "cal_coverage": best["cal_coverage"], "test_accuracy": best["test_accuracy"],
                   "test_coverage": best["test_coverage"]}
    else:
        bounds = thresholds.dropna(subset=["best_error_bound"])
        worst = bounds.loc[bounds["best_error_bound"].idxmin()] if len(bounds) else None
        verdict = {"score": None, "best_score": None if worst is None else worst["score"],
                   "best_guaranteed_accuracy": None if worst is None else 1 - float(worst["best_error_bound"])}
    verdict |= {"target_accuracy": o.target_accuracy, "delta": o.delta, "method": o.method,
                "method_name": method_name, "n_cal": int(len(cal)), "n_test": int(len(test))}

    # calibration of the ensemble probabilities (the model's own logit scale, and CLIP_benchmark's 100)
    kind = "sigmoid" if s.bias is not None else "softmax"
    y = labels
    temp_rows = []
    for reference, zz in (("model logit scale", z), ("fixed scale 100", z / s.scale * 100.0)):
        t = fit_temperature(zz[cal], y[cal], kind=kind)
        before = calibration_metrics(probabilities(zz[test], 1.0, kind=kind), y[test], kind=kind)
        after = calibration_metrics(probabilities(zz[test], t, kind=kind), y[test], kind=kind)
        temp_rows.append({"reference": reference, "temperature": t, "ece_before": before["ece"],
                          "ece_after": after["ece"], "nll_before": before["nll"], "nll_after": after["nll"],
                          "brier_before": before["brier"], "brier_after": after["brier"]})
        if reference == "model logit scale":
            temperature, bins_before, bins_after = t, before["bins"], after["bins"]
    temps = pd.DataFrame(temp_rows)

    # conformal sets on the calibrated probabilities
    probs = _set_probs(z, temperature, kind)
    # randomised APS/RAPS (exact coverage); the non-randomised sets cover far more than 1 - alpha (measured on
    # clipaudit-lit: 99.2% and 2.58 classes per set at alpha 0.1, against 93.8% and 1.31). The policy records
    # the seed, so replaying it on the same images in the same order gives the same sets.
    cscores = conformal_scores(probs[cal], y[cal], method=o.conformal, lam=o.raps_lambda, k_reg=o.raps_k_reg,
                               rng=o.split_seed)
    qhat, finite = conformal_quantile(cscores, o.alpha)
    conformal = None
    set_tables: dict[str, Any] = {}
    if finite:
        sets = prediction_sets(probs[test], qhat, method=o.conformal, lam=o.raps_lambda, k_reg=o.raps_k_reg,
                               rng=o.split_seed + 1)
        sm = set_metrics(sets, y[test])
        conformal = {"method": o.conformal, "alpha": o.alpha, "qhat": float(qhat), "lam": o.raps_lambda,
                     "k_reg": o.raps_k_reg, "randomized": True, "rng_seed": o.split_seed + 1,
                     "test_coverage": sm["coverage"],
                     "mean_size": sm["mean_size"], "singleton_fraction": float(np.mean(sets.sum(1) == 1))}
        set_tables = {"set_sizes": sm["size_histogram"], "class_coverage": sm["per_class"]}
        hierarchical, answers = _hierarchical(ctx, sets, y[test])
        if hierarchical is not None:
            conformal["hierarchical"] = hierarchical
            set_tables["hierarchical_answers"] = answers
    info: dict[str, Any] = {
        "verdict": verdict,
        "temperature": {**temp_rows[0], "kind": kind},
        "conformal": conformal,
        "split": {"calibration_fraction": o.calibration_fraction, "seed": o.split_seed, "n_cal": int(len(cal)),
                  "n_test": int(len(test))},
        "scores": props,
    }
    if o.shift_dataset:
        info["shift"] = _shift(ctx, o, conf_options, best, temperature, kind, qhat if finite else None)
    policy = {
        "format": 1, "kind": "clipaudit-deployment-policy",
        "model": ctx.model.info.as_dict(), "prompts": prompt_identity(ctx.templates),
        "confidence_options": {k: v for k, v in conf_options.__dict__.items()},
        "score": None if best is None else {"name": best["score"], **props[best["score"]]},
        "threshold": None if best is None else best["threshold"],
        "keep_when": None if best is None else best["keep_when"],
        "target_accuracy": o.target_accuracy, "delta": o.delta, "method": o.method, "method_name": method_name,
        "ltt_starts": o.ltt_starts if o.method == "ltt" else None,
        "n_cal": int(len(cal)), "temperature": temperature, "temperature_kind": kind,
        "conformal": conformal,
        "calibration": {"data": cal_data, "separate_dataset": bool(o.calibration_dataset),
                        "fraction": o.calibration_fraction,
                        "data_options": None if ctx.data_options is None else dataclasses.asdict(ctx.data_options),
                        "seed": o.split_seed, "n_cal": int(len(cal)), "n_test": int(len(test))},
        "held_out": {"accuracy": verdict.get("test_accuracy"), "coverage": verdict.get("test_coverage"),
                     "conformal_coverage": None if conformal is None else conformal["test_coverage"]},
    }
    metrics = {"n_cal": int(len(cal)), "n_test": int(len(test)), "guaranteed": best is not None,
               "test_accuracy": verdict.get("test_accuracy"), "test_coverage": verdict.get("test_coverage"),
               "temperature": temperature, "ece_before": temp_rows[0]["ece_before"],
               "ece_after": temp_rows[0]["ece_after"]}
    if conformal:
        metrics |= {"conformal_coverage": conformal["test_coverage"], "conformal_mean_size": conformal["mean_size"]}
    info["verdict_lines"] = verdict_lines(info)
    tables = {"thresholds": thresholds, "temperature": temps, "reliability_before": bins_before,
              "reliability_after": bins_after, **set_tables}
    files = {"deployment_policy.json": (json.dumps(policy, indent=2, default=float) + "\n").encode()}
    return TaskResult(metrics, tables, files=files, info={**info, "policy": policy}, value=policy)


def _hierarchical(ctx: Any, sets: Any, labels: Any) -> tuple[dict[str, Any] | None, Any]:
    """WordNet answers for the sets (a class, or the deepest common hypernym of the set's classes), or None."""
    from .._checks import ClipauditError
    from ..data.wordnet import load_wordnet
    from ..hierarchical_sets import hierarchical_answers
    from ..hierarchy import map_dataset_classes

    try:
        wn = load_wordnet()
        mapping, _, source = map_dataset_classes(wn, list(ctx.dataset.classnames), ctx.dataset.name)
    except ClipauditError as err:
        return {"available": False, "reason": str(err)}, None
    table, summary = hierarchical_answers(sets, labels, mapping.synsets, wordnet=wn,
                                          classnames=list(ctx.dataset.classnames))
    table = table.astype(object).where(table.notna(), None)
    return {"available": True, "class_map": source, **summary}, table


def _set_probs(z: Any, t: float, kind: str) -> Any:
    """Probabilities for conformal sets: the calibrated softmax, or per-class sigmoids renormalised to sum to 1."""
    from ..calibration import probabilities

    p = probabilities(z, t, kind=kind)
    return p / p.sum(axis=1, keepdims=True) if kind == "sigmoid" else p


def _other_context(ctx: Any, spec: str, conf_options: Any) -> Any:
    """A context on another dataset (same model, cache, prompt set; the run's data options otherwise)."""
    import dataclasses

    from ._common import DataOptions
    from ._context import TaskContext
    from ._load import load_dataset

    base = ctx.data_options or DataOptions()
    other = load_dataset(dataclasses.replace(base, dataset=spec, split=None, limit=None))  # the whole dataset
    return TaskContext(ctx.model, other, ctx.cache, templates=ctx.templates, views=conf_options.perturbations)


def _shift(ctx: Any, o: DeploymentOptions, conf_options: Any, best: dict | None, temperature: float, kind: str,
           qhat: float | None) -> dict[str, Any]:
    """Apply the calibrated threshold and quantile to another dataset; say whether the guarantee still holds."""

    import numpy as np

    from ..conformal import prediction_sets, set_metrics
    from ..provenance import data_identity, describe_data
    from .confidence import consistency_table

    sctx = _other_context(ctx, o.shift_dataset, conf_options)
    shift_ds = sctx.dataset
    table, _ = consistency_table(sctx, conf_options)
    out: dict[str, Any] = {"data": describe_data(data_identity(shift_ds)), "n": int(len(table))}
    parts = []
    if best is not None:
        from ..confidence import score_properties
        from ..guarantees import selective_outcome

        score, correct = _score_arrays(table, best["score"], score_properties()[best["score"]])
        thr = best["threshold"] if best["keep_when"] == "score >= threshold" else -best["threshold"]
        res = selective_outcome(score, correct, thr)
        held = res.accuracy is not None and res.accuracy >= o.target_accuracy
        out |= {"accuracy": res.accuracy, "coverage": res.coverage, "holds": held}
        parts.append(f"the threshold keeps {_pct(res.coverage)} at accuracy {_pct(res.accuracy)} "
                     f"({'meets' if held else 'MISSES'} the {_pct(o.target_accuracy)} target)")
    if qhat is not None:
        s = sctx.state
        order = np.searchsorted(s.index, table["index"].to_numpy())
        probs = _set_probs(s.logits[order], temperature, kind)
        sets = prediction_sets(probs, qhat, method=o.conformal, lam=o.raps_lambda, k_reg=o.raps_k_reg,
                               rng=o.split_seed + 2)
        cov = set_metrics(sets, table["label"].to_numpy())["coverage"]
        out |= {"conformal_coverage": cov, "conformal_holds": cov >= 1 - o.alpha}
        parts.append(f"conformal sets cover {_pct(cov)} ({'meets' if cov >= 1 - o.alpha else 'MISSES'} "
                     f"{_pct(1 - o.alpha)})")
    out["sentence"] = (f"Under shift to {out['data']}: " + "; ".join(parts) + "." if parts else
                       f"Under shift to {out['data']}: nothing was calibrated to apply.")
    return out


def summary(result: TaskResult) -> str:
    return "\n".join(f"  {line}" for line in result.info["verdict_lines"])


TASK = register(Task(
    name="deployment",
    title="Deployment verdict",
    help="deployment audit: guaranteed thresholds, temperature scaling, conformal sets, a policy file",
    description="""\
Can I deploy this model, at what threshold, with what guarantee? The evaluation images are split
(stratified, seeded) into a calibration part and a held-out part; everything is chosen on the first and
reported on the second:
  thresholds  for every registered confidence score, the threshold keeping selective accuracy >= the
              target with probability >= 1 - delta (Clopper-Pearson bounds with Learn-then-Test
              fixed-sequence testing, or SGR), and the recommended score
  calibration temperature scaling of the ensemble logits (NLL), ECE/NLL/Brier before and after, against
              the model's logit scale and CLIP_benchmark's fixed 100
  conformal   split-conformal APS/RAPS prediction sets at level 1 - alpha: coverage, set sizes, per class
Writes deployment_policy.json; `clipaudit apply POLICY --dataset D` runs it on new images.

examples:
  clipaudit deployment                                  # clipaudit-lit on the bundled subset
  clipaudit deployment --target-accuracy 0.9 --delta 0.05 --method sgr
  clipaudit deployment --dataset fashion-mnist --limit 4000 --shift-dataset bundled
""",
    options=DeploymentOptions,
    run=run,
    headline=("guaranteed", "test_accuracy", "test_coverage", "conformal_coverage"),
    after=("confidence",),
    views=lambda o: ("hflip",),
    summary=summary,
    order=5,
))
