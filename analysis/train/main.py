"""Entry points of training: :func:`train` (a :class:`TrainJob` -> :class:`TrainResult`) and :func:`main` (argv).

``clipaudit train`` parses its arguments (:mod:`analysis.train.params`) and calls :func:`run`; so does
``python -m analysis.train.main ARGS``. Under ``torchrun --nproc_per_node=K`` every process runs the same
job (DDP; gloo on CPU, nccl on GPU), ``--batch-size`` being the global batch.

What :func:`train` does, in order: build the training data (refusing a test split unless
``allow_test_data``; :mod:`analysis.train.data`) and its captions, then train in the job's mode
(:func:`~analysis.train.lit.train_lit` on cached tower features, or
:func:`~analysis.train.scratch.train_open_clip`), and write the model folder with its training provenance:
``trained_on_test_data`` and ``training_dataset`` (name, split, subset_info, fingerprint), in
``clipaudit_model.json``'s ``training`` block (LiT) or ``training.json`` (scratch).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._checks import ClipauditError
from .config import TEXT_LR, TrainJob, TrainResult
from .data import file_ref, load_training_dataset, training_captions, training_provenance

__all__ = ["train", "main", "run"]


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def _describe(identity: dict[str, Any]) -> str:
    sub = identity["subset_info"]
    text = f"{identity['name']} (split {identity['split']}), {identity['n_images']} images"
    if sub is not None:
        how = f"{sub['kind']}" + (f", limit {sub['limit']}, seed {sub['seed']}" if sub["kind"] == "stratified" else "")
        text += f": a subset of {sub['of']} ({how})"
    return text


def train(job: TrainJob, *, echo: Callable[[str], Any] | None = None) -> TrainResult:
    """Train the model ``job`` describes and write its folder; returns steps, loss, log and data identity.

    Parameters
    ----------
    job : TrainJob
    echo : callable, optional
        Receives one-line notes for the user (training data, caption files, a test-data warning) on the
        main process; e.g. ``print``.

    Raises
    ------
    ClipauditError
        Test data without ``allow_test_data``, an unknown dataset or split, bad caption files, a resume that
        does not fit, too little data for one batch...
    """
    from .distributed import cleanup_distributed, init_distributed

    dataset = load_training_dataset(job)  # refuses test data before any model is built
    pool, captions = training_captions(job, dataset)
    record = training_provenance(dataset)
    config, train_text = job.config, None
    if job.mode == "lit":
        from ..models.lit import parse_train_text

        train_text = parse_train_text(job.get("train_text"))
        if train_text is None and config.text_lr is not None:
            raise ClipauditError(f"--text-lr {config.text_lr:g} needs --train-text all|last:N (the text tower "
                                 f"is locked).")
        if train_text is not None and config.text_lr is None:
            config = dataclasses.replace(config, text_lr=TEXT_LR)
    info = init_distributed(_device(job.device))
    say = echo if (echo is not None and info.is_main) else (lambda _line: None)
    say(f"training data: {_describe(record['training_dataset'])}")
    if record["trained_on_test_data"]:
        say("warning: training on test data (--allow-test-data); the model folder records "
            "trained_on_test_data: true")
    if captions["synonyms"] or captions["kind_of"]:
        say(f"captions: synonyms {captions['synonyms'] or '-'}; kind-of {captions['kind_of'] or '-'}")
    facts = {"limit": job.limit, "templates": captions["templates"], "synonyms": file_ref(captions["synonyms"]),
             "kind_of": file_ref(captions["kind_of"]), "n_images": len(dataset), "n_captions": len(pool.texts),
             **record}
    try:
        if job.mode == "scratch":
            from .scratch import train_open_clip

            result = train_open_clip(dataset, pool, job.out, model_name=job.get("model"), config=config, info=info,
                                     resume=job.resume, progress=job.progress, num_workers=job.get("workers"),
                                     provenance=facts)
        else:
            result = _lit(job, dataset, pool, config, info, train_text, facts)
    finally:
        cleanup_distributed()
    result.dataset = record["training_dataset"]
    result.trained_on_test_data = record["trained_on_test_data"]
    return result


def _lit(job: TrainJob, dataset: Any, pool: Any, config: Any, info: Any, train_text: str | None,
         facts: dict[str, Any]) -> TrainResult:
    import torch

    from ..cache import EmbeddingCache
    from ..models import lit
    from .features import lit_tower_features
    from .lit import train_lit

    cache = EmbeddingCache(job.get("cache_dir"), enabled=job.get("use_cache"), progress=job.progress)
    torch.manual_seed(config.seed)
    heads = lit.LitHeads(job.get("embed_dim"), loss=config.loss)
    name = job.get("name") or Path(job.out).name
    image_size = job.get("image_size")
    encoder = lit.LitTextEncoder.from_frozen(train_text, info.device) if train_text else None

    def feature_fn() -> Any:
        return lit_tower_features(dataset, pool, cache=cache, device=info.device, image_size=image_size,
                                  batch_size=job.get("encode_batch_size"), progress=job.progress and info.is_main,
                                  text=encoder is None)

    def save_fn(trained: Any, folder: Path, meta: dict[str, Any]) -> None:
        training = {**meta, "dataset": dataset.name, "split": dataset.split, **facts}
        lit.save_lit_model(folder, trained, {"name": name, "image_size": image_size, "training": training},
                           text_encoder=encoder)

    return train_lit(feature_fn, heads, job.out, config=config, save_fn=save_fn, info=info,
                     model_meta={"heads": heads.config(), "image_size": image_size},
                     resume=job.resume, progress=job.progress, text_encoder=encoder)


def run(args: argparse.Namespace) -> int:
    """Train from parsed ``clipaudit train`` arguments and print a summary (main process)."""
    from .distributed import is_main_process
    from .params import job_from_args

    job = job_from_args(args)
    result = train(job, echo=print)
    if is_main_process():
        print(f"trained {result.steps} steps, last loss {result.loss:.4f}")
        print(f"model: {job.out}  (log: {result.log_path})")
        if result.skipped:
            print(f"skipped {len(result.skipped)} unreadable image(s), e.g. {result.skipped[0]}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``clipaudit train`` without the rest of the CLI: parse ``argv``, train; user errors exit 2 (one line)."""
    from .params import parse_args

    args = parse_args(argv)
    try:
        return run(args)
    except ClipauditError as err:
        print(f"clipaudit train: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
