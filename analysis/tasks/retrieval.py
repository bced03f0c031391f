"""Task ``retrieval``: image-text retrieval recall@k on captioned data (several captions per image allowed)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import register
from ._options import option
from ._task import Task, TaskResult, TaskSkipped

if TYPE_CHECKING:
    pass

__all__ = ["RetrievalOptions", "TASK"]


@dataclass
class RetrievalOptions:
    k: list[int] = option(factory=lambda: [1, 5, 10], low=1, metavar="K",
                          help="recall@k values (each k is kept in a direction with at least k candidates)")


def run(ctx: Any, options: RetrievalOptions) -> TaskResult:
    import numpy as np

    from ..classifier import valid_rows
    from ..retrieval import retrieval_scores

    ds = ctx.dataset
    if not ds.captions:
        raise TaskSkipped(f"dataset {ds.name!r} has no captions (retrieval needs a manifest with a 'caption' "
                          "or 'captions' column)")
    views = ctx.images()
    valid, skipped = valid_rows(views)
    keep = np.flatnonzero(valid)
    texts, owner = [], []
    for new_i, i in enumerate(keep):
        for cap in ds.captions[i]:
            texts.append(cap)
            owner.append(new_i)
    if not texts:
        raise TaskSkipped(f"the readable images of {ds.name!r} have no captions")
    txt = ctx.cache.text_features(ctx.model, texts)
    metrics, per_query = retrieval_scores(views["none"].features[keep], txt, np.asarray(owner),
                                          tuple(options.k))
    metrics = {**metrics, "n_images": int(len(keep)), "n_texts": len(texts), "n_skipped": len(skipped)}
    return TaskResult(metrics, {"ranks": per_query}, info={"skipped": skipped})


TASK = register(Task(
    name="retrieval",
    result_name="zeroshot_retrieval",
    title="Retrieval",
    help="image-to-text and text-to-image recall@k on captioned data",
    description="""\
Rank every caption for every image and every image for every caption by cosine similarity; recall@k is
the share of queries with a correct match among the top k (an image may have several captions). A k is
reported in a direction only when that direction has at least k candidates. Needs a manifest with
captions (.csv/.jsonl with a 'caption' or 'captions' column); skipped otherwise.

examples:
  clipaudit retrieval --dataset ./coco_val.jsonl
  clipaudit retrieval --dataset ./captions.csv --k 1 5 10 50
""",
    options=RetrievalOptions,
    run=run,
    headline=("image_to_text_recall@1", "text_to_image_recall@1"),
    uses_classifier=False,
    order=50,
))
