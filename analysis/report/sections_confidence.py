"""Report section of the self-consistency confidence run (task ``confidence``).

Which scores are drawn, which prediction each is a confidence for, whether it is a probability and whether
higher means more confident are read from the run record (``record["scores"]``, written from the
confidence-score registry; older records fall back to the registry). Figures are drawn from the saved
tables for the scores marked ``in_figures``: histograms for correct vs wrong predictions (non-binary scores)
and ROC curves of correctness (:func:`sklearn.metrics.roc_curve`) from ``per_sample``; risk-coverage curves
from ``risk_coverage`` (older runs: the ``selective`` coverage grid); a reliability diagram of the scores
that are probabilities (:func:`sklearn.calibration.calibration_curve`, 15 uniform bins as the ECE).
Tables: the summary per score, the recommended deployment thresholds, the low-confidence sets and the
classes most often in O.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .build import SECTIONS, Block, figure_block, metrics_block, table_block, text_block
from .figures import histogram_figure, lines_figure

__all__ = ["confidence_section", "score_correctness", "record_score_properties"]

_HEADLINE = ("n_images", "acc_name_only", "acc_ensemble", "size_O", "acc_name_only_in_O", "acc_name_only_out_O",
             "auroc_S_T", "aurc_S_T", "ece_S_T", "n_skipped")


def record_score_properties(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Score properties of a confidence run: ``record["scores"]`` as written by the run.

    Records written before the run JSON carried them fall back to the confidence-score registry, with the
    old ``labelled_prediction`` mapping (when present) giving each score's prediction.
    """
    props = record.get("scores")
    if isinstance(props, dict) and props:
        return props
    from ..confidence.scores import score_properties

    props = score_properties()
    which = record.get("labelled_prediction") or {}
    for name, p in props.items():
        if name in which:
            p["prediction"] = which[name]
    return props


def score_correctness(per_sample: pd.DataFrame, record: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """score name -> (values, correct) over the labelled rows for the scores drawn in figures.

    Each score is paired with the correctness of its own prediction; the scores and their properties come
    from the run record (:func:`record_score_properties`), in its order.
    """
    out = {}
    for name, p in record_score_properties(record).items():
        if not p.get("in_figures"):
            continue
        col = f"correct_{p.get('prediction', 'name_only')}"
        if name not in per_sample or col not in per_sample:
            continue
        sub = per_sample[[name, col]].dropna()
        values = sub[name].to_numpy(float)
        if len(values) and np.isfinite(values).all():
            out[name] = (values, sub[col].to_numpy(bool))
    return out


def confidence_section(record: dict[str, Any], tables: dict[str, pd.DataFrame], path: Path) -> list[Block]:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import roc_curve

    m = record["metrics"]
    blocks: list[Block] = [metrics_block({k: m[k] for k in _HEADLINE if k in m})]
    perts = ", ".join(record.get("perturbations") or []) or "none"
    blocks.append(text_block(
        f"Reference prediction: the name-only classifier. S_T: share of the {record.get('n_templates')} "
        f"single-template classifiers of {record.get('templates')} that agree with it; S_B: share of the "
        f"perturbations ({perts}) that keep it; O = O_T ∪ O_B. MSP = softmax({record.get('msp_scale', 0):g} x "
        "cosine). Each score is judged against the correctness of the prediction it is a confidence for."))
    props = record_score_properties(record)
    per_sample = tables.get("per_sample")
    scores = score_correctness(per_sample, record) if per_sample is not None else {}
    if scores:
        for name, (v, y) in scores.items():
            if len(np.unique(v)) > 2:  # a binary score's split is the sets table, not a histogram
                blocks.append(figure_block(
                    f"{name}: distribution for correct vs wrong predictions",
                    histogram_figure({"correct": v[y], "wrong": v[~y]}, xlabel=name, bins=20),
                    {"correct": v[y].tolist(), "wrong": v[~y].tolist()}))
        roc = {}
        for name, (v, y) in scores.items():
            if 0 < y.sum() < len(y):
                sign = 1.0 if props[name].get("higher_is_more_confident", True) else -1.0
                fpr, tpr, _ = roc_curve(y, sign * v)
                roc[name] = (fpr.tolist(), tpr.tolist())
        curve = tables.get("risk_coverage")
        if curve is None or curve.empty:  # results written before the full curve was saved
            sel = tables.get("selective")
            curve = sel.assign(risk=1 - sel["accuracy"]) if sel is not None and len(sel) else pd.DataFrame(
                columns=["score", "coverage", "risk"])
        rc = {name: (g["coverage"].tolist(), g["risk"].tolist())
              for name, g in curve.groupby("score", sort=False) if name in scores}
        if roc:
            blocks.append(figure_block("ROC of correctness (true positive = a correct prediction kept)",
                                       lines_figure(roc, xlabel="false positive rate", ylabel="true positive rate",
                                                    diagonal=True),
                                       {k: {"fpr": a, "tpr": b} for k, (a, b) in roc.items()}))
        if rc:
            blocks.append(figure_block("risk–coverage: error rate among the most confident images",
                                       lines_figure(rc, xlabel="coverage", ylabel="selective risk"),
                                       {k: {"coverage": a, "risk": b} for k, (a, b) in rc.items()}))
        bins = int(m.get("ece_bins") or 15)
        rel = {}
        for name, (v, y) in scores.items():
            if props[name].get("is_probability"):
                frac, mean = calibration_curve(y, np.clip(v, 0, 1), n_bins=bins, strategy="uniform")
                rel[name] = (mean.tolist(), frac.tolist())
        if rel:
            blocks.append(figure_block(f"reliability diagram ({bins} uniform bins)",
                                       lines_figure(rel, xlabel="mean score in bin", ylabel="accuracy in bin",
                                                    diagonal=True),
                                       {k: {"mean_score": a, "accuracy": b} for k, (a, b) in rel.items()}))
    thr = tables.get("thresholds")
    if thr is not None and len(thr):
        cols = [c for c in ("score", "prediction", "achievable", "keep_when", "threshold", "coverage",
                            "coverage_ci_low", "coverage_ci_high", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                            "target_accuracy") if c in thr]
        level = thr["confidence_level"].iloc[0] if "confidence_level" in thr else None
        every_ge = "keep_when" not in thr or (thr["keep_when"] == "score >= threshold").all()
        rule = "its score >= threshold" if every_ge else "its score passes the threshold (keep_when)"
        blocks.append(table_block(
            f"in-sample thresholds (chosen and measured on the same images, no guarantee; the Deployment verdict "
            f"gives held-out, guaranteed ones): keep an image when {rule}"
            + (f" ({level:.0%} bootstrap intervals)" if level is not None else ""),
            thr[[c for c in cols if c != "keep_when"]] if every_ge else thr[cols],
        ))
    summary = tables.get("scores")
    if summary is not None and len(summary):
        df = summary.drop(columns=[c for c in ("description",) if c in summary])
        df.insert(2, "probability", [bool(props.get(n, {}).get("is_probability")) for n in df["score"]])
        df.insert(3, "higher = more confident",
                  [bool(props.get(n, {}).get("higher_is_more_confident", True)) for n in df["score"]])
        blocks.append(table_block("every score: AUROC, AURC, E-AURC, ECE", df))
    sets = tables.get("sets")
    if sets is not None and len(sets):
        blocks.append(table_block("low-confidence sets: size and accuracy inside / outside", sets))
    classes = tables.get("classes")
    if classes is not None and len(classes):
        blocks.append(table_block("classes most often low-confidence (in O)", classes.head(10)))
    skipped = record.get("skipped") or []
    if skipped:
        blocks.append(table_block("unreadable images (skipped)", pd.DataFrame(skipped)))
    return blocks


SECTIONS.register("confidence", ("Confidence (self-consistency)", 20, confidence_section))
