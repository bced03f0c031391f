"""Task ``zeroshot``: prompt-ensemble zero-shot classification (CLIP, Radford et al. 2021)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import register
from ._task import Task, TaskResult

__all__ = ["ZeroShotOptions", "TASK"]


@dataclass
class ZeroShotOptions:
    """Zero-shot classification has no options of its own: the prompt set is the run's ``--templates``."""


def run(ctx: Any, options: ZeroShotOptions) -> TaskResult:
    from ..zeroshot import zeroshot_table

    s = ctx.state
    s.check_labelled("Zero-shot classification")
    table, metrics, _ = zeroshot_table(s.features, s.labels, s.weights, scale=s.scale, bias=s.bias,
                                       classnames=s.classnames, index=s.index, logits=s.logits)
    metrics = {**metrics, "n_images": int(len(s.index)), "n_skipped": len(s.skipped)}
    info = {"classnames": s.classnames, "skipped": s.skipped, "templates": s.templates,
            "n_templates": int(len(s.per_template)) if not s.per_class_prompts else 1,
            "logit_scale": s.scale, "logit_bias": s.bias}
    return TaskResult(metrics, {"predictions": table}, info=info, value=table)


TASK = register(Task(
    name="zeroshot",
    result_name="zeroshot_classification",
    title="Zero-shot accuracy",
    help="prompt-ensemble zero-shot classification: top-1, top-5, mean per-class recall",
    description="""\
Classify every image by cosine similarity with class text embeddings averaged over a prompt set (CLIP,
Radford et al. 2021). Logits use the model's own logit scale (and bias). Prints top-1, top-5 (with 5+
classes) and mean per-class recall (CLIP_benchmark's metrics), and writes them with the per-sample
predictions to OUT/zeroshot_classification/, in a file named by the run's settings.

examples:
  clipaudit zeroshot                                   # clipaudit-lit on the bundled subset
  clipaudit zeroshot --dataset fashion-mnist --templates photo --limit 500
  clipaudit zeroshot --model ViT-B-32 --pretrained laion2b_s34b_b79k --dataset imagenet --root /data/imagenet
  clipaudit zeroshot --model ViT-B-32 --pretrained ./epoch_32.pt --dataset ./my_images/ --out runs/
""",
    options=ZeroShotOptions,
    run=run,
    headline=("acc1", "acc5", "mean_per_class_recall"),
    order=10,
))
