"""Option groups every task command shares: the model, the data and prompt set, the output and the cache.

Declared once here, like a task's own options, and turned into ``--help`` text, config keys and checks by
:mod:`analysis.tasks._options`. The audit reads the same dataclasses (top-level keys of its TOML file).
"""

from __future__ import annotations

from dataclasses import dataclass

from .._checks import check_device
from ._options import option

__all__ = ["ModelOptions", "DataOptions", "OutputOptions", "DEFAULT_MODEL"]

DEFAULT_MODEL = "clipaudit-lit"


@dataclass
class ModelOptions:
    """Which model to load and where it runs."""

    model: str = option(DEFAULT_MODEL, short="-m",
                        help="clipaudit model name or folder, 'local-dir:PATH', an open_clip architecture or "
                             "'hf-hub:ORG/REPO' (see `clipaudit models`)")
    pretrained: str | None = option(None, short="-p",
                                    help="open_clip pretrained tag (needs network) or a checkpoint file "
                                         "(.pt/.bin/.safetensors, loaded with weights_only=True)")
    device: str = option("auto", parse=check_device, metavar="DEVICE",
                         help="cpu, cuda, cuda:1, mps ... ('auto': cuda if available)")


@dataclass
class DataOptions:
    """Which images, which split, which subset, which prompt set."""

    dataset: str = option("bundled", short="-d",
                          help="dataset name (see `clipaudit datasets`), an image folder (one subfolder per "
                               "class) or a .csv/.jsonl manifest")
    root: str | None = option(None, help="data folder for named datasets")
    split: str | None = option(None, help="split of the dataset (none: the dataset's evaluation split, e.g. "
                                          "test; see `clipaudit datasets`)")
    classnames: str | None = option(None, help="file of class names (one per line, or a JSON list / "
                                               "{folder: name}) overriding the dataset's")
    limit: int | None = option(None, low=1, help="use a stratified subset of N images (quick runs; every "
                                                 "output then says 'subset')")
    seed: int = option(0, help="seed of the --limit subset")
    allow_duplicate_classnames: bool = option(False, help="accept class names that repeat (ImageNet's 'missile' and "
                                                          "'sunglasses' are allowed by its own loaders); ties between "
                                                          "identical classes go to the lower class index")
    templates: str = option("openai_imagenet", short="-t",
                            help="prompt set: a built-in name, a file in prompts/, or a .txt/.json path "
                                 "(see `clipaudit prompts`)")


@dataclass
class OutputOptions:
    """Where results go and how embeddings are cached."""

    out: str = option("results", short="-o", aliases=("--results-dir",),
                      help="results folder (runs go to OUT/<task>/, named by their settings)")
    cache_dir: str | None = option(None, help="embedding cache folder ($CLIPAUDIT_CACHE or ~/.cache/clipaudit)")
    no_cache: bool = option(False, help="compute embeddings in memory only")
    cache_dtype: str = option("float16", choices=("float16", "float32"),
                              help="storage dtype of cached embeddings (part of every result's identity)")
    batch_size: int = option(64, low=1, help="encoder batch size")
    skip_bad: bool = option(False, help="skip images whose embedding is NaN/Inf (listed like unreadable ones) "
                                        "instead of stopping with an error naming the first one")
    skip_existing: bool = option(False, help="reuse a finished run with exactly the same settings instead of "
                                             "recomputing it")
    quiet: bool = option(False, short="-q", help="no progress bars")
