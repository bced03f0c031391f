"""``clipaudit train``: train a CLIP-style model (LiT heads on frozen towers, or a tiny open_clip from scratch).

Runs the same way under ``torchrun --nproc_per_node=K "$(command -v clipaudit)" train ...`` (DDP; gloo on
CPU, nccl on GPU); ``--batch-size`` is the global batch.

``--mode lit --train-text all|last:N``: LiT with only the image tower locked; the MiniLM text tower (or its
last N transformer layers) is fine-tuned with the heads at ``--text-lr``, and the model folder also gets
``text_tower.safetensors`` (the trained parameters only: ~7 MB per layer, ~87 MB for ``all``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

NAME = "train"
HELP = ("train LiT heads (frozen towers, or a fine-tuned text tower) or a small open_clip model from scratch "
        "(InfoNCE or SigLIP)")
DESCRIPTION = """\
Train a CLIP-style model with InfoNCE or SigLIP.

  --mode lit            LiT, both towers locked (EfficientNet-Lite0 image, MiniLM text): train two projection
                        heads and the temperature on tower features computed once and cached.
  --mode lit --train-text all|last:N
                        LiT, only the image tower locked: the MiniLM text tower (all of it, or its last N of 6
                        transformer layers) is fine-tuned with the heads at --text-lr (default 2e-5); image
                        features still come from the cache, captions are encoded per batch. The model folder
                        also gets text_tower.safetensors (the trained parameters only: ~7 MB per layer,
                        ~87 MB for all), so keep it with the folder.
  --mode scratch        train a small open_clip config (--model) from scratch on the images.

Runs the same under torchrun (DDP; gloo on CPU, nccl on GPU), --batch-size being the global batch:
  torchrun --nproc_per_node=2 "$(command -v clipaudit)" train --dataset fashion-mnist --out my-lit
"""
#: Default learning rate of a fine-tuned text tower (pretrained MiniLM: small steps).
TEXT_LR = 2e-5
MODES = ("lit", "scratch")
AUTO = "auto"
#: Shipped caption vocabularies, ``descriptors/captions/<dataset name><suffix>`` (kept out of the top level
#: of descriptors/, whose files are descriptor pools).
CAPTION_FILES = {"--synonyms": "-synonyms.json", "--kind-of": "-kind-of.json"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ._common import add_dataset_args, add_prompt_args

    parser.add_argument("--mode", choices=MODES, default="lit",
                        help="lit: frozen EfficientNet-Lite0 + MiniLM towers, train projection heads and the "
                             "temperature on cached features (with --train-text: the text tower too); scratch: "
                             "train an open_clip config from scratch (default: lit)")
    parser.add_argument("--out", "-o", required=True,
                        help="output model folder (also gets train_log.csv and checkpoints/)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    add_dataset_args(parser)
    parser.set_defaults(split="train")
    add_prompt_args(parser, default="openai_imagenet")
    parser.add_argument("--synonyms", default=AUTO,
                        help="JSON file {class name: [other names]}: captions also use these names; default "
                             "'auto': descriptors/captions/<dataset>-synonyms.json if shipped; 'none': off")
    parser.add_argument("--kind-of", default=AUTO,
                        help="JSON file {class name: [parent concepts]}: adds '<name>, a kind of <parent>' captions; "
                             "default 'auto': descriptors/captions/<dataset>-kind-of.json if shipped; 'none': off")
    g = parser.add_argument_group("model")
    g.add_argument("--model", default="clipaudit-tiny-vit",
                   help="scratch mode: open_clip architecture (default: clipaudit-tiny-vit)")
    g.add_argument("--embed-dim", type=int, default=256, help="lit mode: shared embedding size (default: 256)")
    g.add_argument("--image-size", type=int, default=224, help="lit mode: image tower input size (default: 224)")
    g.add_argument("--name", default=None, help="lit mode: model name recorded in the folder (default: folder)")
    g.add_argument("--train-text", default="none", metavar="{none,all,last:N}",
                   help="lit mode: fine-tune the MiniLM text tower with the heads: 'all' (embeddings + 6 layers) or "
                        "'last:N' (its last N transformer layers; mean pooling has no weights). Image features "
                        "still come from the cache; captions are encoded per batch; the trained text weights are "
                        "saved in the model folder (text_tower.safetensors). Default: none (locked)")
    g.add_argument("--device", default="auto", help="cpu, cuda (default: cuda if available)")
    t = parser.add_argument_group("training")
    t.add_argument("--loss", choices=("infonce", "siglip"), default="infonce", help="default: infonce")
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
    t.add_argument("--workers", type=int, default=0, help="scratch mode: image loading workers")
    o = parser.add_argument_group("cache")
    o.add_argument("--cache-dir", default=None, help="embedding cache folder (lit mode)")
    o.add_argument("--no-cache", action="store_true", help="lit mode: do not store tower features")
    o.add_argument("--encode-batch-size", type=int, default=64, help="lit mode: tower batch size")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def resolve_caption_file(value: str | None, option: str, dataset: Any) -> str | None:
    """``--synonyms``/``--kind-of`` value -> a file path or None.

    ``"auto"``: the shipped file for the dataset (``descriptors/captions/<dataset.name>-synonyms.json``),
    if there is one and the dataset has no captions of its own; ``"none"``: no file; anything else: a path.
    """
    from ..resources import data_dir

    if value is None or value.lower() == "none":
        return None
    if value != AUTO:
        return value
    if dataset.captions is not None:
        return None
    try:
        path = data_dir("descriptors") / "captions" / f"{dataset.name}{CAPTION_FILES[option]}"
    except FileNotFoundError:
        return None
    return str(path) if path.is_file() else None


def _read_mapping(path: str | None, option: str) -> dict[str, list[str]] | None:
    from .._checks import ClipauditError

    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ClipauditError(f"{option} {path!r}: cannot read a JSON object ({err}).") from None
    if not isinstance(data, dict) or not all(isinstance(v, (list, str)) for v in data.values()):
        raise ClipauditError(f"{option} {path!r}: expected {{class name: [names]}}, got {type(data).__name__}.")
    return {str(k): [v] if isinstance(v, str) else [str(x) for x in v] for k, v in data.items()}


def run(args: argparse.Namespace) -> int:
    from .._checks import ClipauditError
    from ..data.prompts import load_templates
    from ..models.lit import parse_train_text
    from ..train.captions import caption_pool
    from ..train.distributed import cleanup_distributed, init_distributed
    from ..train.loop import TrainConfig
    from ._common import load_dataset_from_args, resolve_device

    args.train_text = parse_train_text(args.train_text)
    if args.train_text and args.mode != "lit":
        raise ClipauditError(f"--train-text {args.train_text} is for --mode lit (scratch mode trains both towers), "
                             f"got --mode {args.mode}.")
    if args.text_lr is not None and not args.train_text:
        raise ClipauditError(f"--text-lr {args.text_lr:g} needs --train-text all|last:N (the text tower is locked).")
    config = TrainConfig(
        loss=args.loss, multi_positive=args.multi_positive, epochs=args.epochs, max_steps=args.max_steps,
        batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay, warmup_steps=args.warmup,
        seed=args.seed, checkpoint_every=args.checkpoint_every,
        text_lr=(args.text_lr or TEXT_LR) if args.train_text else None,
    )
    info = init_distributed(resolve_device(args.device))
    try:
        dataset = load_dataset_from_args(args)
        templates = load_templates(args.templates) if dataset.captions is None else None
        args.synonyms = resolve_caption_file(args.synonyms, "--synonyms", dataset)
        args.kind_of = resolve_caption_file(args.kind_of, "--kind-of", dataset)
        if info.is_main and (args.synonyms or args.kind_of):
            print(f"captions: synonyms {args.synonyms or '-'}; kind-of {args.kind_of or '-'}")
        pool = caption_pool(dataset, templates, synonyms=_read_mapping(args.synonyms, "--synonyms"),
                            kind_of=_read_mapping(args.kind_of, "--kind-of"))
        if args.mode == "scratch":
            result = _scratch(args, dataset, pool, config, info)
        else:
            result = _lit(args, dataset, pool, config, info)
    finally:
        cleanup_distributed()
    if info.is_main:
        print(f"trained {result.steps} steps, last loss {result.loss:.4f}")
        print(f"model: {args.out}  (log: {result.log_path})")
        if result.skipped:
            print(f"skipped {len(result.skipped)} unreadable image(s), e.g. {result.skipped[0]}")
    return 0


def _scratch(args: argparse.Namespace, dataset: Any, pool: Any, config: Any, info: Any) -> Any:
    from ..train.loop import train_open_clip

    return train_open_clip(dataset, pool, args.out, model_name=args.model, config=config, info=info,
                           resume=args.resume, progress=not args.quiet, num_workers=args.workers)


def _lit(args: argparse.Namespace, dataset: Any, pool: Any, config: Any, info: Any) -> Any:
    import torch

    from ..cache import EmbeddingCache
    from ..models import lit
    from ..train.loop import lit_tower_features, train_lit

    cache = EmbeddingCache(args.cache_dir, enabled=not args.no_cache, progress=not args.quiet)
    torch.manual_seed(config.seed)
    heads = lit.LitHeads(args.embed_dim, loss=config.loss)
    name = args.name or Path(args.out).name
    encoder = lit.LitTextEncoder.from_frozen(args.train_text, info.device) if args.train_text else None

    def feature_fn() -> Any:
        return lit_tower_features(dataset, pool, cache=cache, device=info.device, image_size=args.image_size,
                                  batch_size=args.encode_batch_size, progress=not args.quiet and info.is_main,
                                  text=encoder is None)

    def save_fn(trained: Any, folder: Path, meta: dict[str, Any]) -> None:
        training = {**meta, "dataset": dataset.name, "split": args.split, "limit": args.limit,
                    "templates": args.templates, "synonyms": _file_ref(args.synonyms),
                    "kind_of": _file_ref(args.kind_of), "n_images": len(dataset), "n_captions": len(pool.texts)}
        lit.save_lit_model(folder, trained, {"name": name, "image_size": args.image_size, "training": training},
                           text_encoder=encoder)

    return train_lit(feature_fn, heads, args.out, config=config, save_fn=save_fn, info=info,
                     model_meta={"heads": heads.config(), "image_size": args.image_size},
                     resume=args.resume, progress=not args.quiet, text_encoder=encoder)


def _file_ref(path: str | None) -> dict[str, str] | None:
    """Provenance of a caption file: its name and SHA-256 (not the local path)."""
    import hashlib

    if path is None:
        return None
    return {"file": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
