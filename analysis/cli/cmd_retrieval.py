"""``clipaudit retrieval``: image-text retrieval recall@k."""

from __future__ import annotations

import argparse

from . import _common as c

NAME = "retrieval"
HELP = "image-text retrieval recall@k in both directions (captioned datasets)"
DESCRIPTION = """\
Image->text and text->image recall@k (CLIP-paper convention: a query is a hit when any correct
item is among the top k). The dataset is a .csv/.jsonl manifest with 'path' and 'caption' columns
(repeat a path on several rows, or give a JSONL 'captions' list, for several captions per image).

example:
  clipaudit retrieval --dataset captions.csv --k 1 5 10
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    c.add_model_args(parser)
    c.add_dataset_args(parser)
    parser.add_argument("--k", type=int, nargs="+", default=[1, 5, 10], help="recall@k values (default: 1 5 10)")
    c.add_output_args(parser)


def run(args: argparse.Namespace) -> int:
    from ..results import write_run
    from ..retrieval import run_retrieval

    if args.dataset is None:
        from .._checks import ClipauditError

        raise ClipauditError("retrieval needs --dataset: a manifest (.csv/.jsonl) with a 'caption' column.")
    model = c.load_model_from_args(args)
    dataset = c.load_dataset_from_args(args)
    result = run_retrieval(model, dataset, c.cache_from_args(args), ks=tuple(args.k))
    path = write_run(
        args.results_dir, task="zeroshot_retrieval", dataset=dataset.name, model=model.info.name,
        pretrained=model.info.pretrained, metrics=result.metrics, tables={"ranks": result.per_query},
        extra={"model_info": model.info.as_dict(), "dataset_fingerprint": dataset.fingerprint(),
               "skipped": result.skipped},
    )
    c.print_skipped(result.skipped)
    c.print_metrics(f"retrieval {model.info.name} on {dataset.name}:", result.metrics, path)
    return 0
