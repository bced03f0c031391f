"""``clipaudit concepts``: mutual-knowledge concepts, MI and AUC (Sammani & Deligiannis, NeurIPS 2024)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

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


def _colour(labels: np.ndarray, n: int = 10) -> np.ndarray:
    from matplotlib import colormaps

    palette = (np.asarray(colormaps["tab10"].colors)[:n] * 255).astype(np.uint8)
    out = np.zeros((*labels.shape, 3), np.uint8)
    fg = labels >= 0
    out[fg] = palette[labels[fg] % n]
    return out


def save_class_figure(data: dict[str, Any], folder: Path, classname: str) -> Path:
    """One PNG per class: rows = images; columns = image, foreground, segments per method, a prompt."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .._atomic import atomic_path

    images, methods = data["images"], list(data["labels"])
    n_cols = 2 + 2 * len(methods)
    fig, axes = plt.subplots(len(images), n_cols, figsize=(1.8 * n_cols, 1.8 * len(images)), squeeze=False)
    for r, image in enumerate(images):
        panels = [(image, "image"), (np.where(data["foreground"][r][..., None], image, image // 4), "foreground")]
        for m in methods:
            panels.append((_colour(data["labels"][m][r]), f"{m} concepts"))
            prompts = data["prompts"][m][r]
            panels.append((prompts[0] if len(prompts) else image, f"{m} prompt"))
        for ax, (arr, title) in zip(axes[r], panels, strict=True):
            ax.imshow(arr, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=8)
        axes[r][0].set_ylabel(Path(data["items"][r]).name[:18], fontsize=7)
    fig.suptitle(classname, fontsize=10)
    fig.tight_layout()
    path = folder / ((re.sub(r"[^A-Za-z0-9._-]+", "-", classname).strip("-") or "class") + ".png")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    plt.close(fig)
    return path
