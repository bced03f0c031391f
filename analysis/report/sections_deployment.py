"""Report section of the deployment audit (task ``deployment``): the verdict first, then the evidence.

Reads only the run record: the verdict lines, the thresholds per confidence score, the temperature and
reliability tables, the conformal set sizes and per-class coverage, and the score definitions the run wrote
(``record["scores"]``), from which the glossary is built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .build import SECTIONS, Block, figure_block, glossary_block, table_block, text_block, verdict_block
from .figures import bar_figure, lines_figure

__all__ = ["deployment_section", "GLOSSARY"]

#: Metric words used in this section, defined once for the reader.
GLOSSARY = {
    "coverage": "share of images the rule answers (the others are abstained on)",
    "selective accuracy": "accuracy on the answered images only",
    "error bound": "Clopper-Pearson upper confidence bound on the error rate of the answered calibration images, "
                   "corrected for testing many thresholds; the guarantee holds when it is <= 1 - target",
    "delta": "allowed probability that the guarantee fails over the draw of the calibration images",
    "calibration part / held-out part": "images the thresholds, temperature and quantile are chosen on / images "
                                        "they are reported on (never the same images)",
    "temperature": "T dividing the logits before the softmax, fitted by minimising the negative log-likelihood",
    "ECE": "expected calibration error: mean |accuracy - confidence| over 15 equal-width confidence bins, "
           "weighted by the images in each bin",
    "NLL": "negative log-likelihood of the true class (lower is better)",
    "Brier": "mean squared error between the probability vector and the one-hot true class (lower is better)",
    "conformal set": "the classes whose conformal score is below the calibrated quantile; contains the true class "
                     "with probability >= 1 - alpha on average",
    "set size": "number of classes in a prediction set (1 = a single answer)",
}


def _rename(df: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    return df.rename(columns={k: v for k, v in names.items() if k in df.columns})


def deployment_section(record: dict[str, Any], tables: dict[str, pd.DataFrame], path: Path) -> list[Block]:
    blocks: list[Block] = [verdict_block(record.get("verdict_lines") or [])]
    split = record.get("split") or {}
    blocks.append(text_block(
        f"Everything above was chosen on {split.get('n_cal', '?')} calibration images and is reported on "
        f"{split.get('n_test', '?')} held-out images (a stratified split, seed {split.get('seed', '?')}); the "
        f"policy file deployment_policy.json beside these results runs the same rule on new images "
        f"(`clipaudit apply`)."))
    thr = tables.get("thresholds")
    if thr is not None and len(thr):
        shown = _rename(thr, {"score": "score", "achievable": "guaranteed", "threshold": "threshold",
                              "keep_when": "keep when", "cal_coverage": "coverage (calibration)",
                              "cal_selected": "kept (calibration)", "cal_errors": "errors (calibration)",
                              "error_bound": "error bound", "best_error_bound": "best error bound",
                              "test_coverage": "coverage (held-out)", "test_accuracy": "selective accuracy (held-out)"})
        blocks.append(table_block("every confidence score: the guaranteed threshold and what it does on held-out "
                                  "images", shown))
    temps = tables.get("temperature")
    if temps is not None and len(temps):
        blocks.append(table_block("temperature scaling of the ensemble probabilities (held-out metrics before -> "
                                  "after)", temps))
    for when in ("before", "after"):
        bins = tables.get(f"reliability_{when}")
        if bins is None or not len(bins):
            continue
        conf_col = next((c for c in ("confidence", "mean_confidence", "avg_confidence") if c in bins.columns), None)
        acc_col = next((c for c in ("accuracy", "acc") if c in bins.columns), None)
        if conf_col and acc_col:
            used = bins[bins[next((c for c in ("count", "n") if c in bins.columns), conf_col)] > 0]
            blocks.append(figure_block(
                f"reliability {when} temperature scaling (held-out; counts per bin in the table)",
                lines_figure({"accuracy": (used[conf_col].tolist(), used[acc_col].tolist()),
                              "perfect calibration": ([0.0, 1.0], [0.0, 1.0])},
                             xlabel="mean confidence in bin", ylabel="accuracy in bin"),
                {"confidence": used[conf_col].tolist(), "accuracy": used[acc_col].tolist()}))
        blocks.append(table_block(f"reliability bins {when} temperature scaling", bins))
    sizes = tables.get("set_sizes")
    if sizes is not None and len(sizes):
        cols = list(sizes.columns)
        blocks.append(figure_block("conformal set sizes (held-out)",
                                   bar_figure([str(v) for v in sizes[cols[0]]], sizes[cols[1]].tolist(),
                                              xlabel="images"),
                                   {"size": sizes[cols[0]].tolist(), "images": sizes[cols[1]].tolist()}))
    per_class = tables.get("class_coverage")
    if per_class is not None and len(per_class):
        blocks.append(table_block("conformal coverage per class (the marginal guarantee can hide under-covered "
                                  "classes)", per_class))
    h = (record.get("conformal") or {}).get("hierarchical") or {}
    if h.get("available") and h.get("top_ancestors"):
        blocks.append(table_block("answering the WordNet ancestor when a set holds several classes: the most "
                                  "common answers", pd.DataFrame(h["top_ancestors"])))
    elif h and not h.get("available"):
        blocks.append(text_block(f"No hierarchical answers: {h.get('reason', 'WordNet is not available')}"))
    shift = record.get("shift")
    if shift:
        blocks.append(text_block(shift["sentence"]))
    words = dict(GLOSSARY)
    for name, spec in (record.get("scores") or {}).items():
        words[name] = spec.get("description", "")
    blocks.append(glossary_block(words))
    return blocks


SECTIONS.register("deployment", ("Deployment verdict", 0, deployment_section))
