"""The zero-shot classifier state shared by every task of a run (pure: arrays in, arrays out).

One :class:`ClassifierState` per model x dataset x prompt set holds the valid rows, their image features
for every encoded view, the per-template class embeddings, the name-only and ensemble class weights, and
(computed on first use, then kept) the logits. Tasks read it instead of recomputing name-only and ensemble
logits each in their own module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ._checks import ClipauditError
from .ensemble import ensemble_weights, logits

__all__ = ["ClassifierState", "valid_rows"]


def valid_rows(views: Mapping[str, Any]) -> tuple[np.ndarray, list[dict[str, str]]]:
    """Rows valid in every view (``ImageFeatures``-like: ``.valid``, ``.skipped``) and the skipped list (once each)."""
    valid: np.ndarray | None = None
    skipped: list[dict[str, str]] = []
    seen: set[str | None] = set()
    for feats in views.values():
        valid = feats.valid.copy() if valid is None else valid & feats.valid
        for s in feats.skipped:
            if s.get("index") not in seen:
                seen.add(s.get("index"))
                skipped.append(s)
    if valid is None:
        raise ClipauditError("No image views were encoded.")
    return valid, skipped


@dataclass
class ClassifierState:
    """Image features and zero-shot classifiers of one model on one dataset with one prompt set.

    Attributes
    ----------
    classnames : list of str
    index : ndarray of shape (n,)
        Dataset indices of the rows kept (readable in every view).
    labels : ndarray of shape (n,)
    views : dict of str -> ndarray of shape (n, dim)
        L2-normalised image features per view (``"none"`` is the original image).
    per_template : ndarray of shape (n_templates, n_classes, dim)
        L2-normalised class embeddings per template (one row for per-class prompt sets).
    name_only : ndarray of shape (n_classes, dim)
        Class weights of the bare class name (template ``"{}"``).
    scale, bias : float
        The model's logit scale and bias.
    n_total : int
        Images in the dataset (kept + skipped).
    skipped : list of dict
        Unreadable (or non-finite) images: index, item, error.
    templates : str
        Name of the prompt set.
    """

    classnames: list[str]
    index: np.ndarray
    labels: np.ndarray
    views: dict[str, np.ndarray]
    per_template: np.ndarray
    name_only: np.ndarray
    scale: float
    bias: float | None
    n_total: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    templates: str = ""
    per_class_prompts: bool = False

    @classmethod
    def from_arrays(cls, views: Mapping[str, Any], labels: np.ndarray, classnames: Sequence[str], *,
                    per_template: np.ndarray, name_only: np.ndarray, scale: float, bias: float | None,
                    templates: str = "", per_class_prompts: bool = False) -> ClassifierState:
        """Keep the rows valid in every view (``views``: name -> object with ``features``, ``valid``, ``skipped``)."""
        valid, skipped = valid_rows(views)
        keep = np.flatnonzero(valid)
        if len(keep) == 0:
            raise ClipauditError(f"No readable images: all {len(valid)} images were skipped "
                                 f"(first: {skipped[0]['item'] if skipped else 'none'}).")
        labels = np.asarray(labels)[keep]
        per_template = np.asarray(per_template, np.float32)
        name_only = np.asarray(name_only, np.float32).reshape(-1, per_template.shape[-1])  # (1, C, D) -> (C, D)
        return cls(list(classnames), keep, labels, {v: np.asarray(f.features)[keep] for v, f in views.items()},
                   per_template, name_only, float(scale), bias, len(valid), skipped, templates, per_class_prompts)

    @property
    def features(self) -> np.ndarray:
        """Features of the original images, shape (n, dim)."""
        return self.views["none"]

    @property
    def n_classes(self) -> int:
        return len(self.classnames)

    @cached_property
    def weights(self) -> np.ndarray:
        """Prompt-ensemble class weights (n_classes, dim)."""
        return ensemble_weights(self.per_template)

    @cached_property
    def logits(self) -> np.ndarray:
        """Ensemble logits ``scale * cos + bias``, shape (n, n_classes)."""
        return logits(self.features, self.weights, self.scale, self.bias)

    @cached_property
    def name_only_logits(self) -> np.ndarray:
        """Name-only logits, shape (n, n_classes)."""
        return logits(self.features, self.name_only, self.scale, self.bias)

    def check_labelled(self, task: str) -> None:
        """Raise when some kept image has no class label (classification tasks need one per image)."""
        if (self.labels < 0).any():
            n = int((self.labels < 0).sum())
            raise ClipauditError(f"{task} needs a class label for every image; {n} image(s) have none.")
