"""Self-consistency confidence of a zero-shot classifier (Ge, Ren et al., CVPR 2023, §4.1 and §5.1).

The reference prediction is the name-only classifier, ĉ(x, ∅): the class whose bare name (template
``"{}"``) is most similar to the image. Its confidence is judged by agreement:

- **S_T(x)** (paper Eq. 1): fraction of single-template classifiers (default: all templates of the set,
  the 80 OpenAI ImageNet templates) whose top-1 equals ĉ(x, ∅). All T single-template classifiers are
  one (T·C, D) bank and cost one matrix product per chunk of images.
- **S_B(x)** (paper Eq. 2): fraction of image perturbations (default: horizontal flip, applied after
  the model's preprocessing) under which the name-only top-1 is unchanged.
- **O = O_T ∪ O_B** (Alg. 1, line 10, in the binary form the experiments use): O_T = images on which
  the prompt-ensembled classifiers of the prompt sets T1 (first half of the templates), T2 (second
  half), T3 (all) and T4 (∅, name only) do not all agree; O_B = images whose name-only top-1 changes
  under a perturbation (S_B < 1).

Baselines: max cosine logit and max softmax probability (softmax of ``msp_scale`` x cosine, by
default the model's logit scale) of the name-only classifier and of the all-template ensemble.
Every score is evaluated against the correctness of the prediction it is a confidence for: the
name-only prediction for S_T, S_B, their mean, O and the name-only baselines; the ensemble
prediction for the ensemble baselines (column ``prediction`` of the summary).

:func:`self_consistency_table` is the pure core (arrays in, DataFrame out), :func:`confidence_summary`
turns its output into metric tables, and :func:`run_confidence` fetches the embeddings from the cache.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import softmax

from ._checks import ClipauditError, check_positive_int
from .ensemble import ensemble_weights
from .selective import (
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

if TYPE_CHECKING:
    from .cache import EmbeddingCache
    from .data import ImageDataset, TemplateSet
    from .models import ClipModel

__all__ = [
    "SCORES",
    "ConfidenceResult",
    "prompt_sets",
    "single_template_predictions",
    "classifier_outputs",
    "prompt_consistency",
    "perturbation_consistency",
    "low_confidence_sets",
    "continuous_low_confidence",
    "self_consistency_table",
    "confidence_summary",
    "run_confidence",
]

#: Confidence scores evaluated by :func:`confidence_summary`:
#: name -> (prediction whose correctness labels it, description).
SCORES: dict[str, tuple[str, str]] = {
    "S_T": ("name_only", "prompt consistency: share of single-template top-1 equal to the name-only top-1"),
    "S_B": ("name_only", "perturbation consistency: share of perturbations keeping the name-only top-1"),
    "S_TB": ("name_only", "mean of S_T and S_B"),
    "consistent": ("name_only", "1 - [x in O] (binary: outside the low-confidence set O = O_T ∪ O_B)"),
    "max_logit_name_only": ("name_only", "max cosine similarity, name-only classifier"),
    "msp_name_only": ("name_only", "max softmax probability, name-only classifier"),
    "max_logit_ensemble": ("ensemble", "max cosine similarity, all-template ensemble"),
    "msp_ensemble": ("ensemble", "max softmax probability, all-template ensemble"),
}

_MAX_ELEMENTS = 2**24  # logits held at once (64 MB of float32)


# ---------------------------------------------------------------------------------------------- inputs
def _as_matrix(x: Any, name: str, *, dim: int | None = None) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 2 or not np.issubdtype(a.dtype, np.floating):
        raise ClipauditError(
            f"{name} must be a float array of shape (n, dim); got dtype {a.dtype}, shape {a.shape}."
        )
    if dim is not None and a.shape[1] != dim:
        raise ClipauditError(f"{name} has embedding size {a.shape[1]}, the class embeddings have {dim}.")
    return a


def _as_bank(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 3 or not np.issubdtype(a.dtype, np.floating):
        raise ClipauditError(
            f"{name} must be a float array of shape (n_templates, n_classes, dim); got dtype "
            f"{a.dtype}, shape {a.shape}."
        )
    return a


def prompt_sets(
    n_templates: int,
    splits: Sequence[float] | Sequence[Sequence[int]] | None = None,
    *,
    include_all: bool = True,
) -> dict[str, np.ndarray]:
    """Template index sets to ensemble: the paper's T1, T2, T3 (T4 = name only is added by the caller).

    Parameters
    ----------
    n_templates : int
        Number of templates in the per-template embeddings.
    splits : None, sequence of float, or sequence of index sequences
        None: first half and second half (T1 = ``[0, T//2)``, T2 = ``[T//2, T)``; for the 80 OpenAI
        templates in open_clip's order, templates 0-39 and 40-79 as in the paper). Fractions: consecutive
        chunks of those sizes (each in (0, 1], sum <= 1), e.g. ``[0.25] * 4``. Index sequences: the
        template indices of each set, e.g. a random 40 (the paper's variant).
    include_all : bool, default=True
        Append the set of all templates (the paper's T3).

    Returns
    -------
    dict
        ``{"T1": indices, "T2": indices, ...}`` in order.
    """
    check_positive_int("n_templates", n_templates)
    if splits is None:
        if n_templates < 2:
            raise ClipauditError(
                f"Splitting templates into halves needs at least 2 templates, got {n_templates} "
                "(a per-class prompt set is averaged into one; use a template set)."
            )
        groups = [np.arange(n_templates // 2), np.arange(n_templates // 2, n_templates)]
    else:
        items = list(splits)
        if not items:
            raise ClipauditError("splits is empty: give fractions (e.g. [0.5, 0.5]) or index lists.")
        if all(
            isinstance(s, int | float | np.integer | np.floating) and not isinstance(s, bool) for s in items
        ):
            fr = np.asarray(items, dtype=np.float64)
            if np.any(fr <= 0) or np.any(fr > 1) or fr.sum() > 1 + 1e-9:
                raise ClipauditError(
                    f"splits as fractions must each be in (0, 1] and sum to at most 1; got {items}."
                )
            bounds = np.round(np.concatenate([[0.0], np.cumsum(fr)]) * n_templates).astype(int)
            groups = [np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        else:
            groups = []
            for i, s in enumerate(items):
                idx = np.asarray(list(s) if not isinstance(s, np.ndarray) else s)
                if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
                    raise ClipauditError(f"splits[{i}] must be a list of template indices, got {s!r}.")
                groups.append(idx.astype(np.int64))
        for i, g in enumerate(groups):
            if len(g) == 0:
                raise ClipauditError(
                    f"Template set T{i + 1} is empty (splits={list(splits)!r}, {n_templates} templates)."
                )
            if g.min() < 0 or g.max() >= n_templates:
                raise ClipauditError(
                    f"Template set T{i + 1} has indices outside 0..{n_templates - 1}: "
                    f"{g[(g < 0) | (g >= n_templates)][:5].tolist()}."
                )
    if include_all:
        groups.append(np.arange(n_templates))
    return {f"T{i + 1}": g for i, g in enumerate(groups)}


# ---------------------------------------------------------------------------------------------- core
def classifier_outputs(
    features: np.ndarray, bank: np.ndarray, *, scale: float | None = None, max_elements: int = _MAX_ELEMENTS
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Top-1, max cosine and (optionally) max softmax probability of K classifiers at once.

    The K classifiers of ``bank`` are stacked into one (K·C, D) matrix, so each chunk of images costs
    one matrix product, whatever K is.

    Parameters
    ----------
    features : ndarray of shape (n_samples, dim)
        L2-normalised image embeddings.
    bank : ndarray of shape (n_classifiers, n_classes, dim)
        L2-normalised class embeddings of each classifier.
    scale : float, optional
        Softmax temperature inverse: probabilities are ``softmax(scale * cosine)``; None skips them.
    max_elements : int, default=2**24
        Logits held in memory at once (sets the image chunk size).

    Returns
    -------
    pred : ndarray of int64, shape (n_samples, n_classifiers)
        Top-1 class (first index on exact ties, as ``np.argmax``).
    max_cos : ndarray of shape (n_samples, n_classifiers)
    msp : ndarray of shape (n_samples, n_classifiers) or None
    """
    f = _as_matrix(features, "features")
    w = _as_bank(bank, "bank")
    k, c, d = w.shape
    if f.shape[1] != d:
        raise ClipauditError(f"features have embedding size {f.shape[1]}, the class embeddings have {d}.")
    dtype = np.result_type(f.dtype, w.dtype, np.float32)
    flat = w.reshape(k * c, d).astype(dtype, copy=False).T  # (D, K*C): every classifier in one matrix
    n = len(f)
    pred = np.empty((n, k), dtype=np.int64)
    max_cos = np.empty((n, k), dtype=dtype)
    msp = np.empty((n, k), dtype=np.float64) if scale is not None else None
    step = max(1, max_elements // (k * c))
    for start in range(0, n, step):
        z = (f[start : start + step].astype(dtype, copy=False) @ flat).reshape(-1, k, c)
        pred[start : start + step] = z.argmax(-1)
        max_cos[start : start + step] = z.max(-1)
        if msp is not None:
            msp[start : start + step] = softmax(float(scale) * z.astype(np.float64), axis=-1).max(-1)
    return pred, max_cos, msp


def single_template_predictions(
    features: np.ndarray, per_template: np.ndarray, *, max_elements: int = _MAX_ELEMENTS
) -> np.ndarray:
    """Top-1 of every single-template classifier: (n_samples, n_templates) class indices.

    One matrix product of the image chunk with the (T·C, D) bank of all per-template class
    embeddings, not T separate classifier runs.
    """
    return classifier_outputs(features, per_template, max_elements=max_elements)[0]


def _agreement(preds: np.ndarray, reference: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    p, r = np.asarray(preds), np.asarray(reference)
    if p.ndim != 2 or r.shape != (len(p),):
        raise ClipauditError(
            f"{what} must be (n_samples, n_columns) and reference (n_samples,); got {p.shape} and {r.shape}."
        )
    return p, r


def prompt_consistency(single_preds: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """S_T: fraction of columns of ``single_preds`` (n_samples, n_templates) equal to ``reference``."""
    p, r = _agreement(single_preds, reference, "single_preds")
    if p.shape[1] == 0:
        raise ClipauditError("S_T needs at least one template (st_templates is empty).")
    return (p == r[:, None]).mean(axis=1)


def perturbation_consistency(perturbed_preds: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """S_B: fraction of perturbations (columns of ``perturbed_preds``) keeping the name-only top-1.

    NaN for every sample when there are no perturbations.
    """
    p, r = _agreement(perturbed_preds, reference, "perturbed_preds")
    if p.shape[1] == 0:
        return np.full(len(r), np.nan)
    return (p == r[:, None]).mean(axis=1)


def low_confidence_sets(
    set_preds: np.ndarray, reference: np.ndarray, perturbed_preds: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The discrete low-confidence sets of Alg. 1.

    Parameters
    ----------
    set_preds : ndarray of shape (n_samples, n_sets)
        Top-1 of each prompt-set ensemble (T1, T2, T3, T4 = name only).
    reference : ndarray of shape (n_samples,)
        Name-only top-1 on the raw image.
    perturbed_preds : ndarray of shape (n_samples, n_perturbations)
        Name-only top-1 on each perturbed image.

    Returns
    -------
    in_O_T, in_O_B, in_O : bool ndarrays of shape (n_samples,)
        O_T: the set predictions are not all equal; O_B: some perturbation changes the name-only top-1;
        O = O_T ∪ O_B.
    """
    s, r, b = np.asarray(set_preds), np.asarray(reference), np.asarray(perturbed_preds)
    if s.ndim != 2 or b.ndim != 2 or r.shape != (len(s),) or len(b) != len(s):
        raise ClipauditError(
            f"set_preds (n, n_sets), reference (n,) and perturbed_preds (n, n_perturbations) "
            f"disagree: {s.shape}, {r.shape}, {b.shape}."
        )
    in_t = (s != s[:, :1]).any(axis=1)
    in_b = (b != r[:, None]).any(axis=1)
    return in_t, in_b, in_t | in_b


def continuous_low_confidence(
    scores: np.ndarray, *, threshold: float | None = None, size: int | None = None
) -> tuple[np.ndarray, float]:
    """Continuous low-confidence set (Alg. 1 with a threshold; the code's fixed-size variant, Tab. 5).

    Parameters
    ----------
    scores : ndarray of shape (n_samples,)
        Confidence, e.g. S_T.
    threshold : float, optional
        Members have ``score < threshold`` (Alg. 1: S_T(x) < τ_t).
    size : int, optional
        Members are the ``size`` lowest scores; ties are broken by the lower row index first (stable
        sort), so the set is deterministic. Give exactly one of ``threshold`` and ``size``.

    Returns
    -------
    mask : bool ndarray of shape (n_samples,)
    threshold : float
        The given threshold, or for ``size`` the highest score inside the set.
    """
    s = np.asarray(scores, dtype=np.float64)
    if (threshold is None) == (size is None):
        raise ClipauditError(
            f"Give exactly one of threshold and size; got threshold={threshold!r}, size={size!r}."
        )
    if threshold is not None:
        return s < threshold, float(threshold)
    check_positive_int("size", size)
    if size > len(s):
        raise ClipauditError(f"size={size} is larger than the number of samples ({len(s)}).")
    order = np.argsort(s, kind="stable")[:size]
    mask = np.zeros(len(s), dtype=bool)
    mask[order] = True
    return mask, float(s[order].max())


def self_consistency_table(
    image_features: np.ndarray,
    per_template: np.ndarray,
    name_only: np.ndarray,
    *,
    perturbed: Mapping[str, np.ndarray] | None = None,
    labels: np.ndarray | None = None,
    msp_scale: float = 100.0,
    splits: Sequence[float] | Sequence[Sequence[int]] | None = None,
    st_templates: Sequence[int] | None = None,
    classnames: Sequence[str] | None = None,
    index: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-sample self-consistency scores, low-confidence sets and baselines.

    Parameters
    ----------
    image_features : ndarray of shape (n_samples, dim)
        L2-normalised image embeddings.
    per_template : ndarray of shape (n_templates, n_classes, dim)
        L2-normalised per-template class embeddings (``EmbeddingCache.class_embeddings``).
    name_only : ndarray of shape (n_classes, dim) or (1, n_classes, dim)
        Class embeddings of the bare class names (template ``"{}"``): the reference classifier.
    perturbed : mapping of str to ndarray of shape (n_samples, dim), optional
        Image embeddings under each perturbation (e.g. ``{"hflip": ...}``). None or empty: no S_B,
        and O = O_T.
    labels : ndarray of shape (n_samples,), optional
        True classes; -1 (or no labels) leaves correctness undefined (<NA>).
    msp_scale : float, default=100.0
        Softmax scale for the max-softmax baselines: ``softmax(msp_scale * cosine)``; pass the model's
        logit scale (100 for OpenAI CLIP).
    splits : optional
        Prompt sets, see :func:`prompt_sets` (default: halves + all = the paper's T1, T2, T3).
    st_templates : sequence of int, optional
        Templates whose single-template classifiers S_T counts (default: all).
    classnames : sequence of str, optional
        Adds ``label_name`` and ``pred_name_only_name`` columns.
    index : ndarray of shape (n_samples,), optional
        Dataset indices of the rows (default 0..n-1).

    Returns
    -------
    DataFrame
        One row per image: index, label, pred_name_only, pred_ensemble, pred_T1..pred_Tk (the last is
        the name-only set), pred_<perturbation>..., S_T, S_B, S_TB, in_O_T, in_O_B, in_O, the four baseline
        scores, correct_name_only, correct_ensemble. ``attrs`` records the sets, the S_T templates and
        ``msp_scale``.
    """
    w = _as_bank(per_template, "per_template")
    t, c, d = w.shape
    feats = _as_matrix(image_features, "image_features", dim=d)
    n = len(feats)
    name = np.asarray(name_only)
    name = name[0] if name.ndim == 3 and name.shape[0] == 1 else name
    name = _as_matrix(name, "name_only", dim=d)
    if name.shape[0] != c:
        raise ClipauditError(f"name_only has {name.shape[0]} classes, per_template has {c}.")
    try:
        scale_ok = math.isfinite(float(msp_scale)) and float(msp_scale) > 0
    except (TypeError, ValueError):
        scale_ok = False
    if not scale_ok:
        raise ClipauditError(f"msp_scale must be a positive number, got {msp_scale!r}.")
    pert = {} if perturbed is None else dict(perturbed)
    for key, arr in pert.items():
        a = _as_matrix(arr, f"perturbed[{key!r}]", dim=d)
        if len(a) != n:
            raise ClipauditError(f"perturbed[{key!r}] has {len(a)} rows, image_features has {n}.")
    if labels is None:
        lab = np.full(n, -1, dtype=np.int64)
    else:
        lab = np.asarray(labels)
        if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
            raise ClipauditError(
                f"labels must be integers of shape ({n},), got dtype {lab.dtype}, shape {lab.shape}."
            )
        if lab.min(initial=0) < -1 or lab.max(initial=-1) >= c:
            raise ClipauditError(
                f"labels must be in -1..{c - 1} (-1 = unlabelled); got range [{lab.min()}, {lab.max()}]."
            )
    st_idx = np.arange(t) if st_templates is None else np.asarray(list(st_templates), dtype=np.int64)
    if st_idx.size == 0 or st_idx.min() < 0 or st_idx.max() >= t:
        raise ClipauditError(
            f"st_templates must be non-empty indices in 0..{t - 1}; got {st_idx[:10].tolist()}."
        )

    sets = prompt_sets(t, splits)
    set_names = [*sets, f"T{len(sets) + 1}"]  # last = name only (the paper's T4 = ∅)
    bank = np.stack([ensemble_weights(w[idx]) for idx in sets.values()] + [name])
    set_pred, set_cos, set_msp = classifier_outputs(feats, bank, scale=msp_scale)
    ref = set_pred[:, -1]
    all_key = len(sets) - 1  # the all-template ensemble (appended last by prompt_sets)
    single = single_template_predictions(feats, w[st_idx])
    pert_pred = (
        np.stack([classifier_outputs(a, name[None])[0][:, 0] for a in pert.values()], axis=1)
        if pert
        else np.empty((n, 0), dtype=np.int64)
    )

    s_t = prompt_consistency(single, ref)
    s_b = perturbation_consistency(pert_pred, ref)
    in_t, in_b, in_o = low_confidence_sets(set_pred, ref, pert_pred)
    labelled = lab >= 0

    def correctness(pred: np.ndarray) -> pd.arrays.BooleanArray:
        out = pd.array(pred == lab, dtype="boolean")
        out[~labelled] = pd.NA
        return out

    cols: dict[str, Any] = {"index": np.arange(n) if index is None else np.asarray(index), "label": lab}
    names_arr = None if classnames is None else np.asarray(list(classnames) + [""], dtype=object)
    if names_arr is not None:
        if len(names_arr) - 1 != c:
            raise ClipauditError(
                f"classnames has {len(names_arr) - 1} names, the class embeddings have {c} classes."
            )
        cols["label_name"] = names_arr[lab]  # -1 -> ""
    cols["pred_name_only"] = ref
    if names_arr is not None:
        cols["pred_name_only_name"] = names_arr[ref]
    cols["pred_ensemble"] = set_pred[:, all_key]
    for j, sname in enumerate(set_names):
        cols[f"pred_{sname}"] = set_pred[:, j]
    for j, key in enumerate(pert):
        cols[f"pred_{key}"] = pert_pred[:, j]
    cols.update(
        {
            "S_T": s_t,
            "S_B": s_b,
            "S_TB": (s_t + s_b) / 2 if pert else np.full(n, np.nan),
            "in_O_T": in_t,
            "in_O_B": in_b,
            "in_O": in_o,
            "max_logit_name_only": set_cos[:, -1],
            "max_logit_ensemble": set_cos[:, all_key],
            "msp_name_only": set_msp[:, -1],
            "msp_ensemble": set_msp[:, all_key],
        }
    )
    table = pd.DataFrame(cols)
    table["correct_name_only"] = correctness(ref)
    table["correct_ensemble"] = correctness(set_pred[:, all_key])
    table.attrs.update(
        {
            "prompt_sets": {**{k: v.tolist() for k, v in sets.items()}, set_names[-1]: "name only ('{}')"},
            "ensemble_set": list(sets)[all_key],
            "st_templates": st_idx.tolist(),
            "perturbations": list(pert),
            "msp_scale": float(msp_scale),
        }
    )
    return table


# ---------------------------------------------------------------------------------------------- summary
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
    """Metrics of every confidence score in a :func:`self_consistency_table`.

    Only labelled rows (correctness not <NA>) are used.

    Parameters
    ----------
    table : DataFrame
        Output of :func:`self_consistency_table`.
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
    has_b = bool(np.isfinite(table["S_B"].to_numpy(dtype=float)).all()) and len(table) > 0
    score_values = {
        "S_T": lab["S_T"].to_numpy(float),
        "S_B": lab["S_B"].to_numpy(float),
        "S_TB": lab["S_TB"].to_numpy(float),
        "consistent": 1.0 - lab["in_O"].to_numpy(float),
        **{
            k: lab[k].to_numpy(float)
            for k in ("max_logit_name_only", "msp_name_only", "max_logit_ensemble", "msp_ensemble")
        },
    }
    if not has_b:
        score_values = {k: v for k, v in score_values.items() if k not in ("S_B", "S_TB")}
    scale_txt = (
        f"softmax({msp_scale:g} x cosine)" if msp_scale is not None else "softmax (scale not recorded)"
    )

    score_rows, sel_rows, thr_rows = [], [], []
    rc_rows: list[pd.DataFrame] = []
    for sname, values in score_values.items():
        pred, desc = SCORES[sname]
        y = correct[pred]
        probability = not sname.startswith("max_logit")
        row: dict[str, Any] = {
            "score": sname,
            "prediction": pred,
            "description": desc,
            "n": n_lab,
            "accuracy": float(y.mean()) if n_lab else math.nan,
        }
        if n_lab:
            row.update(
                auroc=correctness_auroc(values, y),
                aurc=aurc(values, y),
                e_aurc=e_aurc(values, y),
                aurc_oracle=oracle_aurc(y),
                ece=expected_calibration_error(values, y, n_bins=n_bins) if probability else math.nan,
            )
            cov, risk, thr_k = risk_coverage_curve(values, y)
            rc_rows.append(pd.DataFrame({"score": sname, "prediction": pred, "coverage": cov, "risk": risk,
                                         "threshold": thr_k}))
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
                )
                thr_rows.append({"score": sname, "prediction": pred, **rec.as_dict()})
        row["ece_input"] = (
            (scale_txt if sname.startswith("msp") else "the score itself (in [0, 1], no temperature)")
            if probability
            else "n/a: a cosine similarity is not a probability"
        )
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


# ---------------------------------------------------------------------------------------------- wiring
@dataclass
class ConfidenceResult:
    """The per-sample table, what was skipped and how it was computed."""

    table: pd.DataFrame
    skipped: list[dict[str, str]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


def run_confidence(
    model: ClipModel,
    dataset: ImageDataset,
    cache: EmbeddingCache,
    *,
    templates: str | TemplateSet = "openai_imagenet",
    perturbations: Sequence[str] = ("hflip",),
    splits: Sequence[float] | Sequence[Sequence[int]] | None = None,
    st_templates: Sequence[int] | None = None,
) -> ConfidenceResult:
    """Fetch embeddings through ``cache`` and build the :func:`self_consistency_table`.

    Images unreadable in the raw or any perturbed pass are left out (listed in ``skipped``). The MSP
    scale is the model's logit scale.
    """
    from .data import get_perturbation, load_templates

    tset = load_templates(templates)
    if tset.per_class is not None:
        raise ClipauditError(
            f"templates={tset.name!r} is a per-class (CuPL) prompt set; self-consistency needs "
            "templates shared by all classes (e.g. openai_imagenet)."
        )
    per_template = cache.class_embeddings(model, dataset.classnames, tset)
    name_only = cache.class_embeddings(model, dataset.classnames, "name_only")
    raw = cache.image_features(model, dataset)
    perts = list(dict.fromkeys(get_perturbation(p).name for p in perturbations))
    pert_feats = {p: cache.image_features(model, dataset, perturbation=p) for p in perts}
    valid = raw.valid.copy()
    skipped = list(raw.skipped)
    seen = {s.get("index") for s in skipped}
    for feats in pert_feats.values():
        valid &= feats.valid
        skipped += [s for s in feats.skipped if s.get("index") not in seen]
        seen |= {s.get("index") for s in feats.skipped}
    keep = np.flatnonzero(valid)
    if len(keep) == 0:
        raise ClipauditError(f"No readable images in dataset {dataset.name!r} ({len(skipped)} skipped).")
    table = self_consistency_table(
        raw.features[keep],
        per_template,
        name_only,
        perturbed={p: f.features[keep] for p, f in pert_feats.items()},
        labels=np.asarray(dataset.labels)[keep],
        msp_scale=float(model.logit_scale),
        splits=splits,
        st_templates=st_templates,
        classnames=dataset.classnames,
        index=keep,
    )
    info = {
        "templates": tset.name,
        "n_templates": len(tset),
        "perturbations": perts,
        "logit_scale": float(model.logit_scale),
        "logit_bias": model.logit_bias,
        **table.attrs,
    }
    return ConfidenceResult(table, skipped, info)
