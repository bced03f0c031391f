"""Mutual-knowledge interpretation of CLIP-style models (Sammani & Deligiannis, NeurIPS 2024).

One module per stage, each a pure function over numpy arrays:

- :mod:`.spectral`: foreground by graph decomposition of pooled patch tokens (or PCA);
- :mod:`.crf`: dense-CRF refinement of the foreground;
- :mod:`.clusters`: visual concepts by PCA parts and K-means parts;
- :mod:`.visual_prompts`: ellipse / grey-outside / blur-outside prompts per concept region;
- :mod:`.matching`: candidate descriptors and Sinkhorn optimal transport (POT);
- :mod:`.mutual_info`: MI (paper Eq. 1 and the released variant), removal curve, AUC;
- :mod:`.descriptors`: descriptor pools (Menon & Vondrick's JSON format, plain lists);
- :mod:`.pipeline`: the per-class pipeline over a :class:`~analysis.models.ClipModel` and the cache.

The pipeline module imports torch and the cache; it is loaded lazily so the pure stages import light.
"""

from __future__ import annotations

from typing import Any

from .clusters import concept_labels, kmeans_parts, label_maps, pca_parts
from .crf import CRFParams, refine_mask, refine_masks
from .descriptors import DescriptorPool, list_descriptor_pools, load_descriptors, parse_descriptor_pool
from .matching import (
    assign_descriptors,
    candidate_descriptors,
    relevance_filter,
    relevance_order,
    sinkhorn_plan,
    topk_per_row,
)
from .mutual_info import (
    MI_VARIANTS,
    auc_reference,
    auc_trapezoid,
    average_curves,
    match_table,
    mutual_information,
    removal_curve,
)
from .spectral import foreground_masks, foreground_scores, largest_regions, upsample_masks
from .visual_prompts import Ellipse, concept_prompts, draw_prompts, fit_ellipse, fit_inside

__all__ = [
    "CRFParams", "DescriptorPool", "Ellipse", "MI_VARIANTS", "ConceptConfig", "ConceptsResult",
    "assign_descriptors", "auc_reference", "auc_trapezoid", "average_curves", "candidate_descriptors",
    "concept_labels", "concept_prompts", "draw_prompts", "fit_ellipse", "fit_inside", "foreground_masks",
    "foreground_scores", "kmeans_parts", "label_maps", "largest_regions", "list_descriptor_pools",
    "load_descriptors", "match_table", "mutual_information", "parse_descriptor_pool", "pca_parts",
    "refine_mask", "refine_masks", "relevance_filter", "relevance_order", "removal_curve", "run_concepts",
    "segment_class", "sinkhorn_plan", "topk_per_row", "upsample_masks",
]

_LAZY = {"ConceptConfig", "ConceptsResult", "run_concepts", "segment_class"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'analysis.concepts' has no attribute {name!r}")
