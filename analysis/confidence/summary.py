"""Metrics of every registered confidence score in a self-consistency table (pure; no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..selective import (
    DEFAULT_COVERAGES,
    aurc,
    correctness_auroc,
    e_aurc,
    expected_calibration_error,
    oracle_aurc,
    recommend_threshold,
    risk_coverage_curve,
    selective_accuracy,
)
from .core import continuous_low_confidence
from .scores import ConfidenceScore, registered_scores

__all__ = ["confidence_summary", "evaluated_scores"]


def _group_rates(mask: np.ndarray, correct: np.ndarray) -> tuple[float, float]:
    inside, outside = correct[mask], correct[~mask]
    return (
        float(inside.mean()) if len(inside) else math.nan,
        float(outside.mean()) if len(outside) else math.nan,
    )


def confidence_summary(
    table: pd.DataFrame,
    *,
    target_accuracy: float | None = 0.95,
    max_risk: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    confidence_level: float = 0.95,
    coverages: Sequence[float] = DEFAULT_COVERAGES,
    n_bins: int = 15,
    msp_scale: float | None = None,
    low_threshold: float | None = None,
    low_size: int | None = None,
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Metrics of every registered confidence score in a :func:`self_consistency_table`.

    The scores are those of :func:`evaluated_scores` (the registry, in registration order); each is judged
    against the correctness of its own ``prediction``. Only labelled rows (correctness not <NA>) are used.

    Parameters
    ----------
    table : DataFrame
        Output of :func:`analysis.confidence.self_consistency_table`.
    target_accuracy, max_risk : float, optional
        Deployment target for :func:`analysis.selective.recommend_threshold` (give at most one; both None
        skips the thresholds table).
    n_boot, seed, confidence_level : bootstrap settings of the threshold intervals.
    coverages : sequence of float, default=0.5, 0.55, ..., 1.0
        Coverages of the selective-accuracy table.
    n_bins : int, default=15
        ECE bins.
    msp_scale : float, optional
        Softmax scale the MSP columns were computed with (default: ``table.attrs["msp_scale"]``); stated in
        the ``ece_input`` column.
    low_threshold, low_size : optional
        Also report the continuous set ``S_T < low_threshold`` (or the ``low_size`` lowest S_T) and its
        union with O_B (Alg. 1 with τ_t, and τ_i = 1).

    Returns
    -------
    metrics : dict
        Flat numbers for the run JSON.
    tables : dict of DataFrame
        ``scores`` (AUROC, AURC, E-AURC, ECE per score), ``selective`` (accuracy at each coverage),
        ``sets`` (size and accuracy inside/outside O_T, O_B, O...), ``thresholds`` (deployment thresholds
        with bootstrap CIs), ``classes`` (classes most often in O), ``risk_coverage`` (the full
        risk-coverage curve of every score, :func:`analysis.selective.risk_coverage_curve`).
    """
    if msp_scale is None:
        msp_scale = table.attrs.get("msp_scale")
    lab_mask = table["correct_name_only"].notna().to_numpy()
    lab = table[lab_mask]
    n_lab = int(lab_mask.sum())
    correct = {
        "name_only": lab["correct_name_only"].to_numpy(dtype=bool),
        "ensemble": lab["correct_ensemble"].to_numpy(dtype=bool),
    }
    scale_txt = (
        f"softmax({msp_scale:g} x cosine)" if msp_scale is not None else "softmax (scale not recorded)"
    )

    score_rows, sel_rows, thr_rows = [], [], []
    rc_rows: list[pd.DataFrame] = []
    for spec in evaluated_scores(table):
        sname, pred = spec.name, spec.prediction
        y = correct[pred]
        raw = lab[sname].to_numpy(float)
        values = raw if spec.higher_is_more_confident else -raw  # every metric below ranks higher = keep
        sign = 1.0 if spec.higher_is_more_confident else -1.0
        row: dict[str, Any] = {
            "score": sname,
            "prediction": pred,
            "description": spec.description,
            "n": n_lab,
            "accuracy": float(y.mean()) if n_lab else math.nan,
        }
        if n_lab:
            row.update(
                auroc=correctness_auroc(values, y),
                aurc=aurc(values, y),
                e_aurc=e_aurc(values, y),
                aurc_oracle=oracle_aurc(y),
                ece=expected_calibration_error(values, y, n_bins=n_bins) if spec.is_probability else math.nan,
            )
            cov, risk, thr_k = risk_coverage_curve(values, y)
            rc_rows.append(pd.DataFrame({"score": sname, "prediction": pred, "coverage": cov, "risk": risk,
                                         "threshold": sign * thr_k}))
            kept, acc = selective_accuracy(values, y, coverages)
            sel_rows += [
                {"score": sname, "prediction": pred, "coverage": cv, "n_kept": int(k), "accuracy": float(a)}
                for cv, k, a in zip(coverages, kept, acc)
            ]
            if target_accuracy is not None or max_risk is not None:
                rec = recommend_threshold(
                    values,
                    y,
                    target_accuracy=None if max_risk is not None else target_accuracy,
                    max_risk=max_risk,
                    n_boot=n_boot,
                    seed=seed,
                    confidence_level=confidence_level,
                ).as_dict()
                if not spec.higher_is_more_confident:  # back to the score's own scale: keep when score <= t
                    rec["threshold"] = -rec["threshold"]
                    rec["threshold_ci_low"], rec["threshold_ci_high"] = (-rec["threshold_ci_high"],
                                                                         -rec["threshold_ci_low"])
                keep = "score >= threshold" if spec.higher_is_more_confident else "score <= threshold"
                thr_rows.append({"score": sname, "prediction": pred, "keep_when": keep, **rec})
        if not spec.is_probability:
            row["ece_input"] = "n/a: not a probability (e.g. a cosine similarity)"
        elif spec.softmax_scaled:
            row["ece_input"] = scale_txt
        else:
            row["ece_input"] = "the score itself (in [0, 1], no temperature)"
        row["ece_bins"] = n_bins
        score_rows.append(row)

    in_sets = {
        "O_T": table["in_O_T"].to_numpy(bool),
        "O_B": table["in_O_B"].to_numpy(bool),
        "O": table["in_O"].to_numpy(bool),
    }
    if low_threshold is not None or low_size is not None:
        mask, thr = continuous_low_confidence(
            table["S_T"].to_numpy(float), threshold=low_threshold, size=low_size
        )
        in_sets[f"S_T<{thr:g}" if low_threshold is not None else f"S_T lowest {low_size} (<= {thr:g})"] = mask
        in_sets[f"{list(in_sets)[-1]} | O_B"] = mask | in_sets["O_B"]
    set_rows = []
    for sname, mask in in_sets.items():
        m_lab = mask[lab_mask]
        acc_in, acc_out = _group_rates(m_lab, correct["name_only"])
        ens_in, ens_out = _group_rates(m_lab, correct["ensemble"])
        set_rows.append(
            {
                "set": sname,
                "size": int(mask.sum()),
                "fraction": float(mask.mean()) if len(mask) else math.nan,
                "n_labelled_in": int(m_lab.sum()),
                "accuracy_name_only_in": acc_in,
                "accuracy_name_only_out": acc_out,
                "accuracy_ensemble_in": ens_in,
                "accuracy_ensemble_out": ens_out,
            }
        )

    group_col = "label" if n_lab else "pred_name_only"
    grp = table[lab_mask] if n_lab else table
    classes = (
        grp.groupby(group_col)
        .agg(
            n=("in_O", "size"),
            n_in_O=("in_O", "sum"),
            frac_in_O=("in_O", "mean"),
            mean_S_T=("S_T", "mean"),
            accuracy_name_only=(
                "correct_name_only",
                lambda s: float(s.astype(float).mean()) if s.notna().any() else math.nan,
            ),
        )
        .reset_index()
        .rename(columns={group_col: "class"})
    )
    name_col = "label_name" if group_col == "label" else "pred_name_only_name"
    if name_col in grp:
        classes.insert(1, "class_name", classes["class"].map(grp.groupby(group_col)[name_col].first()))
    classes.insert(0, "grouped_by", "true label" if n_lab else "name-only prediction")
    classes = classes.sort_values(
        ["frac_in_O", "n_in_O", "class"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)

    scores_df = pd.DataFrame(score_rows)
    metrics: dict[str, Any] = {
        "n_images": int(len(table)),
        "n_labelled": n_lab,
        "acc_name_only": float(correct["name_only"].mean()) if n_lab else math.nan,
        "acc_ensemble": float(correct["ensemble"].mean()) if n_lab else math.nan,
        **{f"size_{r['set']}": r["size"] for r in set_rows[:3]},
        "acc_name_only_in_O": set_rows[2]["accuracy_name_only_in"],
        "acc_name_only_out_O": set_rows[2]["accuracy_name_only_out"],
        "msp_scale": msp_scale,
        "ece_bins": n_bins,
    }
    for r in score_rows:
        for key in ("auroc", "aurc", "e_aurc", "ece"):
            if key in r:
                metrics[f"{key}_{r['score']}"] = r[key]
    tables = {
        "scores": scores_df,
        "selective": pd.DataFrame(sel_rows),
        "sets": pd.DataFrame(set_rows),
        "thresholds": pd.DataFrame(thr_rows),
        "classes": classes,
        "risk_coverage": pd.concat(rc_rows, ignore_index=True) if rc_rows else pd.DataFrame(
            columns=["score", "prediction", "coverage", "risk", "threshold"]),
    }
    return metrics, tables



def evaluated_scores(table: pd.DataFrame) -> list[ConfidenceScore]:
    """The registered scores :func:`confidence_summary` evaluates on ``table``, in registration order.

    A score is left out when the table has no column for it (registered after the table was built) or when
    its column is not finite everywhere (undefined in this run, e.g. S_B and S_TB without perturbations).
    """
    out = []
    for spec in registered_scores():
        if spec.name in table and np.isfinite(table[spec.name].to_numpy(dtype=float)).all():
            out.append(spec)
    return out
