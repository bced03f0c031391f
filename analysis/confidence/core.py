"""Core of the self-consistency confidence (pure arrays in, arrays / DataFrame out; no torch).

Prompt sets, the stacked classifier bank, S_T, S_B, the low-confidence sets O_T / O_B / O, and
:func:`self_consistency_table`, which writes one column per registered confidence score
(:mod:`analysis.confidence.scores`). See :mod:`analysis.confidence` for the method.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.special import softmax

from .._checks import ClipauditError, check_positive_int
from ..ensemble import ensemble_weights
from ..metrics import top_k_indices
from .scores import ScoreInputs, registered_scores

__all__ = [
    "prompt_sets",
    "single_template_predictions",
    "classifier_outputs",
    "prompt_consistency",
    "perturbation_consistency",
    "low_confidence_sets",
    "continuous_low_confidence",
    "self_consistency_table",
]

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
        Top-1 class in the package's one stable order (:func:`analysis.metrics.top_k_indices`: on exact
        ties the lower class index, as ``np.argmax``).
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
        pred[start : start + step] = top_k_indices(z.reshape(-1, c), 1).reshape(-1, k)
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
        the name-only set), pred_<perturbation>..., in_O_T, in_O_B, in_O, one column per registered
        confidence score (:func:`analysis.confidence.scores.registered_scores`: S_T, S_B, S_TB,
        consistent, the max-logit and max-softmax baselines...), correct_name_only, correct_ensemble.
        ``attrs`` records the sets, the S_T templates, ``msp_scale`` and ``score_columns``.
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
    cols.update({"in_O_T": in_t, "in_O_B": in_b, "in_O": in_o})
    inputs = ScoreInputs(
        features=feats, name_only_weights=name, ensemble_weights=bank[all_key], pred_name_only=ref,
        pred_ensemble=set_pred[:, all_key], s_t=s_t, s_b=s_b, in_o_t=in_t, in_o_b=in_b, in_o=in_o,
        max_cos_name_only=set_cos[:, -1], max_cos_ensemble=set_cos[:, all_key], msp_name_only=set_msp[:, -1],
        msp_ensemble=set_msp[:, all_key], set_preds=set_pred, single_preds=single, perturbed_preds=pert_pred,
        msp_scale=float(msp_scale),
    )
    for score in registered_scores():  # one column per registered confidence score
        values = np.asarray(score.compute(inputs), dtype=np.float64)
        if values.shape != (n,):
            raise ClipauditError(
                f"Confidence score {score.name!r} returned shape {values.shape}; it must return one value per "
                f"image, shape ({n},)."
            )
        cols[score.name] = values
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
            "score_columns": [score.name for score in registered_scores()],
        }
    )
    return table


