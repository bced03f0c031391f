"""``clipaudit zeroshot``: prompt-ensemble zero-shot classification."""

from __future__ import annotations

import argparse

from . import _common as c

NAME = "zeroshot"
HELP = "prompt-ensemble zero-shot classification: top-1, top-5, mean per-class recall"
DESCRIPTION = """\
Classify every image of a dataset by cosine similarity with class text embeddings averaged over a
prompt set (CLIP, Radford et al. 2021). Logits use the model's own logit scale (and bias).
Prints top-1, top-5 (with 5+ classes) and mean per-class recall, and writes them with the
per-sample predictions to RESULTS_DIR/zeroshot/.

examples:
  clipaudit zeroshot                                   # clipaudit-lit on the bundled subset
  clipaudit zeroshot --dataset fashion-mnist --templates photo
  clipaudit zeroshot --model ViT-B-32 --pretrained laion2b_s34b_b79k --dataset imagenet --root /data/imagenet
  clipaudit zeroshot --model ViT-B-32 --pretrained ./epoch_32.pt --dataset ./my_images/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_model_args(parser)
    c.add_dataset_args(parser)
    c.add_prompt_args(parser)
    c.add_output_args(parser)


def run(args: argparse.Namespace) -> int:
    from ..results import write_run
    from ..zeroshot import run_zeroshot

    model = c.load_model_from_args(args)
    dataset = c.load_dataset_from_args(args)
    cache = c.cache_from_args(args)
    result = run_zeroshot(model, dataset, cache, templates=args.templates)
    path = write_run(
        args.results_dir, task="zeroshot_classification", dataset=dataset.name, model=model.info.name,
        pretrained=model.info.pretrained, metrics=result.metrics, tables={"predictions": result.predictions},
        extra={"model_info": model.info.as_dict(), "dataset_fingerprint": dataset.fingerprint(),
               "classnames": dataset.classnames, "skipped": result.skipped, **result.info},
    )
    c.print_skipped(result.skipped)
    c.print_metrics(f"zero-shot {model.info.name} on {dataset.name} ({len(dataset)} images, "
                    f"{result.info['n_templates']} templates from {result.info['templates']}):",
                    result.metrics, path)
    return 0
