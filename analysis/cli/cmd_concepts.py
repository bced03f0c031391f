"""``clipaudit concepts``: mutual-knowledge concepts, MI and AUC (Sammani & Deligiannis, NeurIPS 2024)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import _common as c

NAME = "concepts"
HELP = "mutual-knowledge interpretation: visual concepts, matched descriptors, MI and its AUC"
DESCRIPTION = """\
For each class, decompose the patch tokens of its images jointly (graph decomposition foreground, CRF,
PCA and K-means concepts), encode visual prompts of every concept region, match them to a descriptor
pool by optimal transport, and measure the mutual information between these descriptors and the
descriptors nearest the predicted class's text embedding, with its removal curve and AUC.
Writes per-image, per-class and curve tables to RESULTS_DIR/concepts/ and one figure per class
(image, foreground, concept segments, prompts) to RESULTS_DIR/concepts/<run>.figures/.

MI defaults to the released code's ln N + ln M + H (the numbers the paper reports); --mi textbook
gives the paper's Eq. 1.

examples:
  clipaudit concepts --classes Trouser Bag --images-per-class 20
  clipaudit concepts --model ViT-B-16 --pretrained openai --dataset imagenet --root /data/imagenet \\
      --descriptors ./descriptors_imagenet.json --classes "tench"
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_model_args(parser)
    c.add_dataset_args(parser)
    c.add_prompt_args(parser)
    c.add_output_args(parser)
    g = parser.add_argument_group("concepts")
    g.add_argument("--classes", nargs="+", default=None, help="class names to explain (default: all)")
    g.add_argument("--images-per-class", type=int, default=50, help="images decomposed per class (default: 50)")
    g.add_argument("--descriptors", default="fashion-mnist",
                   help="descriptor pool: a shipped name (descriptors/) or a .json/.txt file "
                        "(default: fashion-mnist)")
    g.add_argument("--foreground", choices=["svd", "pca"], default="svd",
                   help="foreground decomposition (default: svd, the graph decomposition)")
    g.add_argument("--no-crf", action="store_true", help="skip the dense-CRF refinement")
    g.add_argument("--mi", choices=["released", "textbook"], default="released",
                   help="MI definition (default: released)")
    g.add_argument("--parts", type=int, default=5, help="visual concepts per class (default: 5)")
    g.add_argument("--seed", type=int, default=0, help="seed of PCA solvers and K-means (default: 0)")
    g.add_argument("--figure-images", type=int, default=4, help="images per class figure (default: 4)")


def run(args: argparse.Namespace) -> int:
    from ..concepts.descriptors import load_descriptors
    from ..concepts.pipeline import ConceptConfig, run_concepts
    from ..results import run_stem, write_run

    model = c.load_model_from_args(args)
    dataset = c.load_dataset_from_args(args)
    cache = c.cache_from_args(args)
    pool = load_descriptors(args.descriptors)
    config = ConceptConfig(foreground=args.foreground, use_crf=not args.no_crf, mi_variant=args.mi,
                           n_parts=args.parts, seed=args.seed, batch_size=args.batch_size)
    result = run_concepts(model, dataset, cache, pool, classes=args.classes,
                          images_per_class=args.images_per_class, templates=args.templates, config=config,
                          figure_images=args.figure_images)
    task = "concepts"
    stem = run_stem(task, dataset.name, model.info.name, model.info.pretrained)
    fig_dir = Path(args.results_dir) / task / f"{stem}.figures"
    figures = {name: str(save_class_figure(data, fig_dir, name).relative_to(Path(args.results_dir) / task))
               for name, data in result.figures.items()}
    path = write_run(
        args.results_dir, task=task, dataset=dataset.name, model=model.info.name,
        pretrained=model.info.pretrained, metrics=result.metrics,
        tables={"per_image": result.per_image, "per_class": result.per_class, "curves": result.curves},
        extra={"model_info": model.info.as_dict(), "dataset_fingerprint": dataset.fingerprint(),
               "figures": figures, "skipped": result.skipped, **result.info},
    )
    c.print_skipped(result.skipped)
    c.print_metrics(f"mutual-knowledge concepts {model.info.name} on {dataset.name} "
                    f"({result.info['descriptor_pool']} descriptors):", result.metrics, path)
    return 0


def save_class_figure(data: dict[str, Any], folder: Path, classname: str) -> Path:
    """Write one class's figure (:func:`analysis.concepts.figures.class_figure_png`) to ``folder``."""
    from .._atomic import atomic_write_bytes
    from ..concepts.figures import class_figure_png, figure_filename

    folder.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(folder / figure_filename(classname), class_figure_png(data, classname))
