"""The registry of confidence scores (issue 11, item 5): one registration per score, read by every consumer.

A score is a function of what the self-consistency core has computed (:class:`ScoreInputs`: S_T, S_B, the
low-confidence sets, the name-only and ensemble predictions and their max cosine / max softmax, and on demand
the full name-only and ensemble cosine matrices). :func:`analysis.confidence.self_consistency_table` writes one
column per registered score, :func:`analysis.confidence.confidence_summary` evaluates every registered score
against the correctness of the prediction it is a confidence for, and :func:`score_properties` gives the
registry as a JSON-able dict, written into the confidence run JSON under ``"scores"`` so the report reads a
score's properties from the result file.

Adding a score is one call::

    register_score("margin_name_only", lambda x: np.diff(np.sort(x.name_only_cosine, 1)[:, -2:], axis=1)[:, 0],
                   description="top-1 minus top-2 cosine, name-only classifier", prediction="name_only",
                   is_probability=False)

This module imports only numpy (the report imports it to read old records).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from .._checks import ClipauditError, close_matches
from .._registry import Registry

__all__ = [
    "PREDICTIONS",
    "ScoreInputs",
    "ConfidenceScore",
    "SCORE_REGISTRY",
    "SCORES",
    "register_score",
    "unregister_score",
    "registered_scores",
    "score_properties",
]

#: The predictions a score can be a confidence for (each has a ``correct_<prediction>`` column).
PREDICTIONS: tuple[str, ...] = ("name_only", "ensemble")

#: Columns of the self-consistency table that a score may not take as its name.
_RESERVED = frozenset({"index", "label", "label_name", "in_O_T", "in_O_B", "in_O"})


@dataclass(eq=False)
class ScoreInputs:
    """Everything :func:`analysis.confidence.self_consistency_table` has computed for n images.

    A registered score is a function ``ScoreInputs -> ndarray of shape (n,)``. Cosines are of L2-normalised
    embeddings (no logit scale); ``msp_*`` is the max of ``softmax(msp_scale x cosine)``.

    Attributes
    ----------
    features : ndarray of shape (n, dim)
        Image embeddings (unperturbed).
    name_only_weights, ensemble_weights : ndarray of shape (n_classes, dim)
        The name-only classifier (template ``"{}"``) and the all-template prompt ensemble.
    pred_name_only, pred_ensemble : int ndarray of shape (n,)
        Their top-1 (the stable order of :func:`analysis.metrics.top_k_indices`).
    s_t, s_b : ndarray of shape (n,)
        Prompt and perturbation consistency (``s_b`` is NaN without perturbations).
    in_o_t, in_o_b, in_o : bool ndarray of shape (n,)
        The low-confidence sets O_T, O_B and O = O_T ∪ O_B.
    max_cos_name_only, max_cos_ensemble, msp_name_only, msp_ensemble : ndarray of shape (n,)
    set_preds : int ndarray of shape (n, n_sets)
        Top-1 of each prompt-set ensemble (T1, T2, ..., the last one is the name-only classifier).
    single_preds : int ndarray of shape (n, n_st_templates)
        Top-1 of each single-template classifier counted by S_T.
    perturbed_preds : int ndarray of shape (n, n_perturbations)
        Name-only top-1 of each perturbed image.
    msp_scale : float
    """

    features: np.ndarray
    name_only_weights: np.ndarray
    ensemble_weights: np.ndarray
    pred_name_only: np.ndarray
    pred_ensemble: np.ndarray
    s_t: np.ndarray
    s_b: np.ndarray
    in_o_t: np.ndarray
    in_o_b: np.ndarray
    in_o: np.ndarray
    max_cos_name_only: np.ndarray
    max_cos_ensemble: np.ndarray
    msp_name_only: np.ndarray
    msp_ensemble: np.ndarray
    set_preds: np.ndarray
    single_preds: np.ndarray
    perturbed_preds: np.ndarray
    msp_scale: float

    @property
    def n(self) -> int:
        return len(self.features)

    @property
    def has_perturbations(self) -> bool:
        return self.perturbed_preds.shape[1] > 0

    @cached_property
    def name_only_cosine(self) -> np.ndarray:
        """(n, n_classes) cosine of every image with every class name (computed on first use)."""
        return np.asarray(self.features, np.float32) @ np.asarray(self.name_only_weights, np.float32).T

    @cached_property
    def ensemble_cosine(self) -> np.ndarray:
        """(n, n_classes) cosine of every image with every ensembled class embedding (computed on first use)."""
        return np.asarray(self.features, np.float32) @ np.asarray(self.ensemble_weights, np.float32).T


@dataclass(frozen=True)
class ConfidenceScore:
    """One confidence score: how it is computed and how it is read.

    Attributes
    ----------
    name : str
        Column of the self-consistency table and ``score`` of the summary tables.
    description : str
        One line for tables and the run JSON.
    compute : callable
        ``ScoreInputs -> ndarray of shape (n,)``. A score that is undefined in a run (S_B without
        perturbations) returns NaN for every image and is left out of the summary.
    prediction : {"name_only", "ensemble"}
        The prediction whose correctness the score is a confidence for.
    is_probability : bool
        The score is in [0, 1] and reads as P(prediction is right): ECE and reliability diagrams apply.
    higher_is_more_confident : bool, default=True
        False for scores where a lower value means more confident (e.g. an entropy); the summary then ranks
        by ``-score`` and states thresholds as ``score <= threshold``.
    in_figures : bool, default=False
        Drawn in the report's figures (every score is in its tables).
    softmax_scaled : bool, default=False
        The score is a softmax at the run's ``msp_scale`` (stated as the ECE input).
    """

    name: str
    description: str
    compute: Callable[[ScoreInputs], np.ndarray] = field(repr=False)
    prediction: Literal["name_only", "ensemble"]
    is_probability: bool
    higher_is_more_confident: bool = True
    in_figures: bool = False
    softmax_scaled: bool = False

    def properties(self) -> dict[str, Any]:
        """JSON-able properties (everything but ``compute``)."""
        out = asdict(self)
        out.pop("compute")
        out.pop("name")
        return out


class ScoreRegistry(Registry[ConfidenceScore]):
    """A :class:`analysis._registry.Registry` that keeps registration order and can drop an entry."""

    def ordered(self) -> list[ConfidenceScore]:
        """Entries in registration order (the order of table columns and summary rows)."""
        return list(self._entries.values())

    def unregister(self, name: str) -> ConfidenceScore:
        entry = self.get(name)
        del self._entries[name]
        self._help.pop(name, None)
        return entry


#: Every confidence score, in registration order.
SCORE_REGISTRY = ScoreRegistry("confidence score")


def register_score(
    name: str,
    compute: Callable[[ScoreInputs], np.ndarray],
    *,
    description: str,
    prediction: str,
    is_probability: bool,
    higher_is_more_confident: bool = True,
    in_figures: bool = False,
    softmax_scaled: bool = False,
) -> ConfidenceScore:
    """Register a confidence score (see :class:`ConfidenceScore` for the fields); returns its entry."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ClipauditError(f"A confidence score name must be an identifier (letters, digits, _); got {name!r}.")
    if name in _RESERVED or name.startswith(("pred_", "correct_")):
        raise ClipauditError(
            f"Confidence score name {name!r} collides with a column of the self-consistency table; "
            "pick another (not index/label/in_O*, not pred_*/correct_*)."
        )
    if prediction not in PREDICTIONS:
        near = close_matches(str(prediction), PREDICTIONS)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise ClipauditError(
            f"Confidence score {name!r}: prediction must be one of {', '.join(PREDICTIONS)}; got {prediction!r}.{hint}"
        )
    if is_probability and not higher_is_more_confident:
        raise ClipauditError(
            f"Confidence score {name!r}: a probability of being right is higher when more confident; "
            "is_probability=True needs higher_is_more_confident=True."
        )
    if not callable(compute):
        raise ClipauditError(f"Confidence score {name!r}: compute must be a function of ScoreInputs.")
    entry = ConfidenceScore(name, str(description), compute, prediction, bool(is_probability),  # type: ignore[arg-type]
                            bool(higher_is_more_confident), bool(in_figures), bool(softmax_scaled))
    return SCORE_REGISTRY.register(name, entry, help=entry.description)


def unregister_score(name: str) -> ConfidenceScore:
    """Remove a registered score (unknown names raise with the closest registered name)."""
    return SCORE_REGISTRY.unregister(name)


def registered_scores() -> list[ConfidenceScore]:
    """Every registered score, in registration order."""
    return SCORE_REGISTRY.ordered()


def score_properties(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The registry as ``{name: {description, prediction, is_probability, higher_is_more_confident, ...}}``.

    JSON-able; the confidence run JSON carries it under ``"scores"``. ``names`` restricts it to those scores
    (e.g. the ones a run's summary evaluated), in registration order.
    """
    keep = None if names is None else set(names)
    return {s.name: s.properties() for s in SCORE_REGISTRY.ordered() if keep is None or s.name in keep}


class _ScoresView(Mapping[str, tuple[str, str]]):
    """Read-only ``name -> (prediction, description)`` view of the registry (the former ``SCORES`` dict)."""

    def __getitem__(self, name: str) -> tuple[str, str]:
        if name not in SCORE_REGISTRY:
            raise KeyError(name)
        s = SCORE_REGISTRY.get(name)
        return s.prediction, s.description

    def __iter__(self) -> Iterator[str]:
        return iter([s.name for s in SCORE_REGISTRY.ordered()])

    def __len__(self) -> int:
        return len(SCORE_REGISTRY.ordered())


#: ``name -> (prediction whose correctness labels it, description)``: a live view of :data:`SCORE_REGISTRY`,
#: kept for callers of the former dict; new code reads :func:`registered_scores` / :func:`score_properties`.
SCORES: Mapping[str, tuple[str, str]] = _ScoresView()


# ---------------------------------------------------------------------------------------------- built-ins
def _s_tb(x: ScoreInputs) -> np.ndarray:
    return (x.s_t + x.s_b) / 2 if x.has_perturbations else np.full(x.n, np.nan)


register_score("S_T", lambda x: x.s_t, prediction="name_only", is_probability=True, in_figures=True,
               description="prompt consistency: share of single-template top-1 equal to the name-only top-1")
register_score("S_B", lambda x: x.s_b, prediction="name_only", is_probability=True, in_figures=True,
               description="perturbation consistency: share of perturbations keeping the name-only top-1")
register_score("S_TB", _s_tb, prediction="name_only", is_probability=True, in_figures=True,
               description="mean of S_T and S_B")
register_score("consistent", lambda x: 1.0 - x.in_o.astype(np.float64), prediction="name_only",
               is_probability=True,
               description="1 - [x in O] (binary: outside the low-confidence set O = O_T ∪ O_B)")
register_score("max_logit_name_only", lambda x: x.max_cos_name_only, prediction="name_only", is_probability=False,
               description="max cosine similarity, name-only classifier")
register_score("msp_name_only", lambda x: x.msp_name_only, prediction="name_only", is_probability=True,
               in_figures=True, softmax_scaled=True, description="max softmax probability, name-only classifier")
register_score("max_logit_ensemble", lambda x: x.max_cos_ensemble, prediction="ensemble", is_probability=False,
               in_figures=True, description="max cosine similarity, all-template ensemble")
register_score("msp_ensemble", lambda x: x.msp_ensemble, prediction="ensemble", is_probability=True,
               in_figures=True, softmax_scaled=True, description="max softmax probability, all-template ensemble")
