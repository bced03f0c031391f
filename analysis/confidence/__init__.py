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

The confidence scores are a registry (:mod:`analysis.confidence.scores`): each declares how it is computed
from the core's arrays, which prediction it is a confidence for, whether it is a probability and whether higher
means more confident. Adding a score is one :func:`register_score` call; the table, the summary, the run JSON
(:func:`score_properties`, under ``"scores"``) and the report follow.

Modules: :mod:`~analysis.confidence.core` (:func:`self_consistency_table`, the pure core: arrays in, DataFrame
out), :mod:`~analysis.confidence.scores` (the registry), :mod:`~analysis.confidence.summary`
(:func:`confidence_summary`: metric tables). None imports torch; the ``confidence`` task
(:mod:`analysis.tasks.confidence`) feeds them the run's shared classifier state.
"""

from __future__ import annotations

from .core import (
    classifier_outputs,
    continuous_low_confidence,
    low_confidence_sets,
    perturbation_consistency,
    prompt_consistency,
    prompt_sets,
    self_consistency_table,
    single_template_predictions,
)
from .scores import (
    SCORE_REGISTRY,
    SCORES,
    ConfidenceScore,
    ScoreInputs,
    register_score,
    registered_scores,
    score_properties,
    unregister_score,
)
from .summary import confidence_summary, evaluated_scores

__all__ = [
    "SCORES",
    "SCORE_REGISTRY",
    "ConfidenceScore",
    "ScoreInputs",
    "register_score",
    "unregister_score",
    "registered_scores",
    "score_properties",
    "prompt_sets",
    "single_template_predictions",
    "classifier_outputs",
    "prompt_consistency",
    "perturbation_consistency",
    "low_confidence_sets",
    "continuous_low_confidence",
    "self_consistency_table",
    "confidence_summary",
    "evaluated_scores",
]
