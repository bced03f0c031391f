"""Task ``concepts``: mutual-knowledge concepts (Sammani & Deligiannis, NeurIPS 2024) on a sample of classes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import register
from ._options import option
from ._task import Task, TaskResult, TaskSkipped

__all__ = ["ConceptsOptions", "TASK", "concept_config"]


@dataclass
class ConceptsOptions:
    classes: list[str] | None = option(None, metavar="CLASS",
                                       help="class names to explain (none: the --n-classes classes most often in "
                                            "the low-confidence set O)")
    n_classes: int = option(2, low=1, help="classes explained when --classes is not given")
    images_per_class: int = option(8, low=1, help="images decomposed per class (the first N of the class)")
    descriptors: str = option("auto", help="descriptor pool: a shipped name (descriptors/), a .json/.txt file, or "
                                           "'auto' (the shipped pool named in the dataset's name; the task is "
                                           "skipped when none matches)")
    foreground: str = option("svd", choices=("svd", "pca"), help="foreground decomposition (svd: graph cut)")
    crf: bool = option(True, help="refine the foreground with the dense CRF")
    mi: str = option("released", choices=("released", "textbook"),
                     help="MI definition: the released code's ln N + ln M + H (the paper's numbers) or Eq. 1")
    parts: int = option(5, low=1, help="visual concepts per class")
    cluster_seed: int = option(0, help="seed of the PCA solvers and K-means")
    figure_images: int = option(3, low=0, help="images per class figure")


def concept_config(options: Any, batch_size: int) -> Any:
    """The pipeline's :class:`~analysis.concepts.pipeline.ConceptConfig` from concepts options (task or table)."""
    from ..concepts.pipeline import ConceptConfig

    return ConceptConfig(foreground=options.foreground, use_crf=options.crf, mi_variant=options.mi,
                         n_parts=options.parts, seed=options.cluster_seed, batch_size=batch_size)


def _descriptor_pool(ctx: Any, spec: str) -> Any:
    from ..concepts.descriptors import list_descriptor_pools, load_descriptors

    if spec != "auto":
        return load_descriptors(spec)
    pools = [p for p in list_descriptor_pools() if p.lower() in ctx.dataset.name.lower()]
    if not pools:
        raise TaskSkipped(f"no shipped descriptor pool matches dataset {ctx.dataset.name!r} (shipped: "
                          f"{', '.join(list_descriptor_pools()) or 'none'}); give --descriptors a .json/.txt pool")
    return load_descriptors(max(pools, key=len))


def _classes(ctx: Any, o: ConceptsOptions) -> tuple[list[str], str]:
    from .confidence import low_confidence_set

    names = list(ctx.dataset.classnames)
    if o.classes:
        return list(o.classes), "chosen in the options"
    order = low_confidence_set(ctx).classes_by_rate()
    src = "the confidence task" if ctx.output("confidence") is not None else "O computed with the confidence defaults"
    return [names[c] for c in order][:o.n_classes], f"the classes most often in the low-confidence set O ({src})"


def run(ctx: Any, o: ConceptsOptions) -> TaskResult:
    from ..concepts.figures import class_figure_png, figure_filename
    from ..concepts.pipeline import run_concepts

    pool = _descriptor_pool(ctx, o.descriptors)
    if not ctx.dataset.classnames:
        raise TaskSkipped(f"dataset {ctx.dataset.name!r} has no classes")
    classes, why = _classes(ctx, o)
    if not classes:
        raise TaskSkipped("the dataset has no labelled images")
    result = run_concepts(ctx.model, ctx.dataset, ctx.cache, pool, classes=classes,
                          images_per_class=o.images_per_class, templates=ctx.templates,
                          config=concept_config(o, ctx.cache.batch_size), figure_images=o.figure_images)
    files, figures = {}, {}
    for cname, data in result.figures.items() if o.figure_images > 0 else ():
        name = figure_filename(cname)
        files[name] = class_figure_png(data, cname)
        figures[cname] = name
    tables = {"per_image": result.per_image, "per_class": result.per_class, "curves": result.curves}
    info = {"figures": figures, "skipped": result.skipped, "class_selection": why, **result.info}
    return TaskResult(result.metrics, tables, files=files, info=info, value=result)


TASK = register(Task(
    name="concepts",
    title="Mutual-knowledge concepts",
    help="mutual-knowledge concepts (Sammani & Deligiannis 2024): visual concepts, descriptors, MI and AUC",
    description="""\
For each class, decompose the patch tokens of its images jointly (graph decomposition foreground, CRF,
PCA and K-means concepts), encode visual prompts of every concept region, match them to a descriptor
pool by optimal transport, and measure the mutual information between these descriptors and the
descriptors nearest the predicted class's text embedding, with its removal curve and AUC. Writes
per-image, per-class and curve tables and one figure per class (image, foreground, concept segments,
prompts).

MI defaults to the released code's ln N + ln M + H (the numbers the paper reports); --mi textbook
gives the paper's Eq. 1. Without --classes, the classes most often in the low-confidence set O are
explained (O from the confidence task of the same run, else computed with its defaults).

examples:
  clipaudit concepts --classes Trouser Bag --images-per-class 20
  clipaudit concepts --model ViT-B-16 --pretrained openai --dataset imagenet --root /data/imagenet \\
      --descriptors ./descriptors_imagenet.json --classes "tench"
""",
    options=ConceptsOptions,
    run=run,
    headline=("kmeans_mi", "kmeans_auc_reference", "pca_mi", "pca_auc_reference"),
    after=("confidence",),
    views=lambda o: () if o.classes else ("hflip",),
    order=40,
))
