"""Options shared by subcommands, and the code that turns them into objects."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = [
    "add_model_args", "add_dataset_args", "add_output_args", "add_prompt_args", "load_model_from_args",
    "load_dataset_from_args", "cache_from_args", "print_metrics", "DEFAULT_MODEL",
]

DEFAULT_MODEL = "clipaudit-lit"


def add_model_args(parser: argparse.ArgumentParser, *, multiple: bool = False) -> None:
    g = parser.add_argument_group("model")
    g.add_argument("--model", "-m", default=None if multiple else DEFAULT_MODEL,
                   action="append" if multiple else "store",
                   help=f"clipaudit model name or folder, 'local-dir:PATH', or an open_clip architecture "
                        f"(see `clipaudit models`); default: {DEFAULT_MODEL}"
                        + (" (repeat to compare models)" if multiple else ""))
    g.add_argument("--pretrained", "-p", default=None, action="append" if multiple else "store",
                   help="open_clip pretrained tag (e.g. laion2b_s34b_b79k; needs network) or a checkpoint "
                        "file (.pt/.bin/.safetensors)" + (" (one per --model)" if multiple else ""))
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def add_dataset_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("data")
    g.add_argument("--dataset", "-d", default=None,
                   help="dataset name (bundled, fashion-mnist, imagenet; see `clipaudit datasets`), an image "
                        "folder (one subfolder per class) or a .csv/.jsonl manifest; default: bundled")
    g.add_argument("--root", default=None, help="data folder for named datasets")
    g.add_argument("--split", default=None, help="split of the dataset (default: the dataset's evaluation split)")
    g.add_argument("--classnames", default=None,
                   help="file of class names (one per line, or JSON list / {folder: name}) overriding "
                        "the dataset's")
    g.add_argument("--limit", type=int, default=None,
                   help="use a stratified subset of about N images (quick runs)")


def add_prompt_args(parser: argparse.ArgumentParser, default: str = "openai_imagenet") -> None:
    parser.add_argument("--templates", "-t", default=default,
                        help=f"prompt set: a built-in name, a file in prompts/, or a .txt/.json path "
                             f"(see `clipaudit prompts`); default: {default}")


def add_output_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("output and cache")
    g.add_argument("--results-dir", default="results", help="where result tables go (default: results)")
    g.add_argument("--cache-dir", default=None,
                   help="embedding cache folder (default: $CLIPAUDIT_CACHE or ~/.cache/clipaudit)")
    g.add_argument("--no-cache", action="store_true", help="compute embeddings in memory only")
    g.add_argument("--cache-dtype", default="float16", choices=["float16", "float32"],
                   help="storage dtype of cached embeddings (default: float16)")
    g.add_argument("--batch-size", type=int, default=64, help="encoder batch size (default: 64)")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def load_model_from_args(args: argparse.Namespace) -> Any:
    from ..models import load_model

    return load_model(args.model, args.pretrained, device=resolve_device(args.device))


def load_dataset_from_args(args: argparse.Namespace) -> Any:
    from ..data import create_dataset

    return create_dataset(args.dataset, split=getattr(args, "split", None), root=args.root, classnames=args.classnames,
                          limit=args.limit)


def cache_from_args(args: argparse.Namespace) -> Any:
    from ..cache import EmbeddingCache

    return EmbeddingCache(args.cache_dir, dtype=args.cache_dtype, batch_size=args.batch_size,
                          progress=not args.quiet, enabled=not args.no_cache)


def print_metrics(title: str, metrics: dict[str, Any], path: Path | None = None) -> None:
    print(title)
    for k, v in metrics.items():
        print(f"  {k:<28} {v:.4f}" if isinstance(v, float) else f"  {k:<28} {v}")
    if path is not None:
        print(f"results: {path}")


def print_skipped(skipped: list[dict[str, str]], limit: int = 10) -> None:
    if not skipped:
        return
    print(f"skipped {len(skipped)} unreadable image(s):")
    for s in skipped[:limit]:
        print(f"  {s['item']}: {s['error']}")
    if len(skipped) > limit:
        print(f"  ... and {len(skipped) - limit} more (listed in the run JSON)")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)
