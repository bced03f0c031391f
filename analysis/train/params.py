"""``clipaudit train`` arguments (argparse only, as open_clip_train's ``params.py``) and their :class:`TrainJob`.

Options of one mode default to None ("not given") so that giving one in the other mode is an error
(:data:`~analysis.train.config.MODE_OPTIONS`) instead of being ignored; ``--dataset`` (like ``--split`` and
``--out``) may be given once. No torch here: ``clipaudit train --help`` stays fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from .config import AUTO, DEFAULT_DATASET, LOSSES, MODE_DEFAULTS, MODES, TEXT_LR, TrainConfig, TrainJob

__all__ = ["add_arguments", "build_parser", "job_from_args", "parse_args"]


class _Once(argparse.Action):
    """Store a value that may be given only once (a repeated ``-d`` would silently drop all but the last)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        seen = getattr(namespace, "_given_once", set())
        if self.dest in seen:
            raise argparse.ArgumentError(self, f"given twice ({getattr(namespace, self.dest)!r}, then {values!r}); "
                                               f"train takes one (merge the data into one folder or manifest)")
        namespace._given_once = seen | {self.dest}
        setattr(namespace, self.dest, values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every ``clipaudit train`` option to ``parser``."""
    parser.add_argument("--mode", choices=MODES, default="lit",
                        help="lit: frozen EfficientNet-Lite0 + MiniLM towers, train projection heads and the "
                             "temperature on cached features (with --train-text: the text tower too); scratch: "
                             "train an open_clip config from scratch (default: lit)")
    parser.add_argument("--out", "-o", required=True, action=_Once,
                        help="output model folder (also gets train_log.csv and checkpoints/)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    d = parser.add_argument_group("data")
    d.add_argument("--dataset", "-d", default=DEFAULT_DATASET, action=_Once,
                   help=f"dataset name (see `clipaudit datasets`), an image folder (one subfolder per class, or "
                        f"train/ val/ test/ folders of those) or a .csv/.jsonl manifest (optional 'split' column); "
                        f"given once; default: {DEFAULT_DATASET} (its train split: 60,000 images, use --limit for "
                        f"a quick run)")
    d.add_argument("--root", default=None, help="data folder for named datasets")
    d.add_argument("--split", default=None, action=_Once,
                   help="split to train on; default: the dataset's train split if it has one, else its default "
                        "split. Test splits are refused (see --allow-test-data)")
    d.add_argument("--allow-test-data", action="store_true",
                   help="train on a test split anyway (e.g. the bundled images, which are Fashion-MNIST test "
                        "images); the model folder records trained_on_test_data: true, so evaluations on those "
                        "images are not mistaken for held-out results")
    d.add_argument("--classnames", default=None,
                   help="file of class names (one per line, or JSON list / {folder: name}) overriding the dataset's")
    d.add_argument("--limit", type=int, default=None,
                   help="train on a stratified subset of about N images (recorded in the model folder)")
    parser.add_argument("--templates", "-t", default="openai_imagenet",
                        help="prompt set turning class names into captions: a built-in name, a file in prompts/, or "
                             "a .txt/.json path (see `clipaudit prompts`); default: openai_imagenet")
    parser.add_argument("--synonyms", default=AUTO,
                        help="JSON file {class name: [other names]}: captions also use these names; default "
                             "'auto': descriptors/captions/<dataset>-synonyms.json if shipped; 'none': off")
    parser.add_argument("--kind-of", default=AUTO,
                        help="JSON file {class name: [parent concepts]}: adds '<name>, a kind of <parent>' captions; "
                             "default 'auto': descriptors/captions/<dataset>-kind-of.json if shipped; 'none': off")
    g = parser.add_argument_group("model (options of the other mode are errors)")
    g.add_argument("--model", default=None,
                   help=f"scratch mode: open_clip architecture (default: {MODE_DEFAULTS['model']})")
    g.add_argument("--embed-dim", type=int, default=None,
                   help=f"lit mode: shared embedding size (default: {MODE_DEFAULTS['embed_dim']})")
    g.add_argument("--image-size", type=int, default=None,
                   help=f"lit mode: image tower input size (default: {MODE_DEFAULTS['image_size']})")
    g.add_argument("--name", default=None, help="lit mode: model name recorded in the folder (default: folder)")
    g.add_argument("--train-text", default=None, metavar="{none,all,last:N}",
                   help="lit mode: fine-tune the MiniLM text tower with the heads: 'all' (embeddings + 6 layers) or "
                        "'last:N' (its last N transformer layers; mean pooling has no weights). Image features "
                        "still come from the cache; captions are encoded per batch; the trained text weights are "
                        "saved in the model folder (text_tower.safetensors). Default: none (locked)")
    g.add_argument("--device", default="auto", help="cpu, cuda (default: cuda if available)")
    t = parser.add_argument_group("training")
    t.add_argument("--loss", choices=LOSSES, default="infonce", help="default: infonce")
    t.add_argument("--multi-positive", action="store_true",
                   help="InfoNCE: same-class pairs in a batch are positives, not negatives (class captions)")
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--max-steps", type=int, default=None, help="stop after this many steps")
    t.add_argument("--batch-size", type=int, default=64, help="global batch size (default: 64)")
    t.add_argument("--lr", type=float, default=1e-3, help="learning rate (lit: of the heads; default: 1e-3)")
    t.add_argument("--text-lr", type=float, default=None,
                   help=f"lit --train-text: learning rate of the text tower (default: {TEXT_LR:g})")
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--warmup", type=int, default=0, help="warm-up steps (then cosine decay)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
    t.add_argument("--workers", type=int, default=None,
                   help=f"scratch mode: image loading workers (default: {MODE_DEFAULTS['workers']})")
    o = parser.add_argument_group("cache (lit mode)")
    o.add_argument("--cache-dir", default=None, help="lit mode: embedding cache folder")
    o.add_argument("--no-cache", dest="use_cache", action="store_const", const=False, default=None,
                   help="lit mode: do not store tower features")
    o.add_argument("--encode-batch-size", type=int, default=None,
                   help=f"lit mode: tower batch size (default: {MODE_DEFAULTS['encode_batch_size']})")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    """A stand-alone parser (``python -m analysis.train.main``); ``clipaudit train`` adds the same options."""
    parser = argparse.ArgumentParser(prog="clipaudit train", description="Train a CLIP-style model.")
    add_arguments(parser)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def job_from_args(args: argparse.Namespace) -> TrainJob:
    """The :class:`TrainJob` of parsed arguments (raises ClipauditError for options of the other mode)."""
    train_text = args.train_text
    given_text = train_text is not None and train_text.strip().lower() != "none"
    config = TrainConfig(
        loss=args.loss, multi_positive=args.multi_positive, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup,
        seed=args.seed, checkpoint_every=args.checkpoint_every,
        text_lr=(args.text_lr or TEXT_LR) if given_text else args.text_lr,
    )
    return TrainJob(
        out=args.out, mode=args.mode, dataset=args.dataset, split=args.split, root=args.root,
        classnames=args.classnames, limit=args.limit, allow_test_data=args.allow_test_data,
        templates=args.templates, synonyms=args.synonyms, kind_of=args.kind_of, model=args.model,
        workers=args.workers, embed_dim=args.embed_dim, image_size=args.image_size, name=args.name,
        train_text=train_text, cache_dir=args.cache_dir, use_cache=args.use_cache,
        encode_batch_size=args.encode_batch_size, device=args.device, resume=args.resume,
        progress=not args.quiet, config=config,
    )
