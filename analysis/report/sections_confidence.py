"""Report section of the self-consistency confidence run (task ``confidence``).

Figures are drawn from the saved tables: for each score, histograms for correct vs wrong predictions and
ROC curves of correctness (:func:`sklearn.metrics.roc_curve`) from ``per_sample``; risk-coverage curves
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

__all__ = ["confidence_section", "score_correctness"]

#: Scores drawn in the figures (others stay in the tables).
FIGURE_SCORES = ("S_T", "S_B", "S_TB", "msp_name_only", "msp_ensemble", "max_logit_ensemble")
#: Scores that are probabilities in [0, 1] (reliability diagram).
PROBABILITY_SCORES = ("S_T", "S_TB", "msp_name_only", "msp_ensemble")
_HEADLINE = ("n_images", "acc_name_only", "acc_ensemble", "size_O", "acc_name_only_in_O", "acc_name_only_out_O",
             "auroc_S_T", "aurc_S_T", "ece_S_T", "n_skipped")


def score_correctness(per_sample: pd.DataFrame, record: dict[str, Any]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """score name -> (values, correct) over the labelled rows, each against its own prediction."""
    which = record.get("labelled_prediction") or {}
    out = {}
    for name in FIGURE_SCORES:
        pred = which.get(name, "ensemble" if name.endswith("ensemble") else "name_only")
        col = f"correct_{pred}"
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
    per_sample = tables.get("per_sample")
    scores = score_correctness(per_sample, record) if per_sample is not None else {}
    if scores:
        for name in ("S_T", "S_TB", "msp_ensemble"):
            if name in scores:
                v, y = scores[name]
                blocks.append(figure_block(
                    f"{name}: distribution for correct vs wrong predictions",
                    histogram_figure({"correct": v[y], "wrong": v[~y]}, xlabel=name, bins=20),
                    {"correct": v[y].tolist(), "wrong": v[~y].tolist()}))
        roc = {}
        for name, (v, y) in scores.items():
            if 0 < y.sum() < len(y):
                fpr, tpr, _ = roc_curve(y, v)
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
        for name in PROBABILITY_SCORES:
            if name in scores:
                v, y = scores[name]
                frac, mean = calibration_curve(y, np.clip(v, 0, 1), n_bins=bins, strategy="uniform")
                rel[name] = (mean.tolist(), frac.tolist())
        if rel:
            blocks.append(figure_block(f"reliability diagram ({bins} uniform bins)",
                                       lines_figure(rel, xlabel="mean score in bin", ylabel="accuracy in bin",
                                                    diagonal=True),
                                       {k: {"mean_score": a, "accuracy": b} for k, (a, b) in rel.items()}))
    thr = tables.get("thresholds")
    if thr is not None and len(thr):
        cols = [c for c in ("score", "prediction", "achievable", "threshold", "coverage", "coverage_ci_low",
                            "coverage_ci_high", "accuracy", "accuracy_ci_low", "accuracy_ci_high",
                            "target_accuracy") if c in thr]
        level = thr["confidence_level"].iloc[0] if "confidence_level" in thr else None
        blocks.append(table_block(
            "recommended deployment thresholds: keep an image when its score >= threshold"
            + (f" ({level:.0%} bootstrap intervals)" if level is not None else ""), thr[cols]))
    for key, caption in (("scores", "every score: AUROC, AURC, E-AURC, ECE"),
                         ("sets", "low-confidence sets: size and accuracy inside / outside")):
        if key in tables and len(tables[key]):
            df = tables[key].drop(columns=[c for c in ("description",) if c in tables[key]])
            blocks.append(table_block(caption, df))
    classes = tables.get("classes")
    if classes is not None and len(classes):
        blocks.append(table_block("classes most often low-confidence (in O)", classes.head(10)))
    skipped = record.get("skipped") or []
    if skipped:
        blocks.append(table_block("unreadable images (skipped)", pd.DataFrame(skipped)))
    return blocks


SECTIONS.register("confidence", ("Confidence (self-consistency)", 20, confidence_section))
