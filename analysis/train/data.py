"""Training data: which dataset and split, the refusal of test data, captions, and what a model records.

* :func:`load_training_dataset` builds the dataset of a :class:`~analysis.train.config.TrainJob`. With no
  ``split`` it takes the dataset's ``train`` split when it has one (else the dataset's default split), and it
  refuses a dataset whose split is ``"test"`` (the bundled images are Fashion-MNIST test images) unless
  ``allow_test_data`` is set: a model trained on test images scores higher on them than it should.
* :func:`training_provenance` is what every model folder records about its training data:
  ``trained_on_test_data`` and ``training_dataset`` (name, split, subset_info, fingerprint, n_images).
* :func:`training_captions` turns the dataset (its captions, or its class names through prompt templates,
  synonyms and "a kind of" phrases) into a :class:`~analysis.train.captions.CaptionPool`.

No torch here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .._checks import ClipauditError
from ..data import create_dataset, dataset_splits
from ..data.base import TEST, ImageDataset
from .captions import CaptionPool, caption_pool
from .config import AUTO, DEFAULT_DATASET, TrainJob

__all__ = ["load_training_dataset", "training_split", "check_not_test", "training_provenance", "training_captions",
           "resolve_caption_file", "read_caption_mapping", "file_ref", "CAPTION_FILES", "TRAIN_SPLIT"]

#: The split training uses when none is given and the dataset has it.
TRAIN_SPLIT = "train"
#: Shipped caption vocabularies, ``descriptors/captions/<dataset name><suffix>`` (kept out of the top level
#: of descriptors/, whose files are descriptor pools).
CAPTION_FILES = {"--synonyms": "-synonyms.json", "--kind-of": "-kind-of.json"}


def training_split(spec: str | None, split: str | None = None) -> str | None:
    """``split`` if given; else ``"train"`` if dataset ``spec`` has that split; else None (its default)."""
    if split is not None:
        return split
    splits, _ = dataset_splits(spec)
    return TRAIN_SPLIT if TRAIN_SPLIT in splits else None


def check_not_test(dataset: ImageDataset, spec: str | None, *, allow_test_data: bool = False) -> None:
    """Refuse to train on test data (``dataset.split == "test"``) unless ``allow_test_data``.

    Raises
    ------
    ClipauditError
        One line: which dataset, why, how to train on a train split instead, and ``--allow-test-data``.
    """
    if dataset.split != TEST or allow_test_data:
        return
    name = spec if spec is not None else "bundled"
    splits, _ = dataset_splits(spec)
    other = next((s for s in (TRAIN_SPLIT, "val") if s in splits), None)
    instead = (f"--split {other}" if other else
               f"a dataset with a train split (the default: --dataset {DEFAULT_DATASET} --split {TRAIN_SPLIT})")
    raise ClipauditError(
        f"Dataset {name!r} is a test split (split={dataset.split!r}): training on test images leaks them into "
        f"every evaluation on them. Train on {instead}, or pass --allow-test-data to train on it anyway (the "
        f"model folder then records trained_on_test_data: true)."
    )


def load_training_dataset(job: TrainJob) -> ImageDataset:
    """The dataset of ``job`` (train split by default, ``limit``), refused if it is test data (see module doc)."""
    dataset = create_dataset(job.dataset, split=training_split(job.dataset, job.split), root=job.root,
                             classnames=job.classnames, limit=job.limit, seed=job.data_seed)
    check_not_test(dataset, job.dataset, allow_test_data=job.allow_test_data)
    return dataset


def training_provenance(dataset: ImageDataset) -> dict[str, Any]:
    """``{"trained_on_test_data": split == "test", "training_dataset": dataset.identity()}``."""
    return {"trained_on_test_data": dataset.split == TEST, "training_dataset": dataset.identity()}


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


def read_caption_mapping(path: str | None, option: str) -> dict[str, list[str]] | None:
    """A ``{class name: [names]}`` JSON file (``--synonyms``/``--kind-of``); None for no file."""
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ClipauditError(f"{option} {path!r}: cannot read a JSON object ({err}).") from None
    if not isinstance(data, dict) or not all(isinstance(v, (list, str)) for v in data.values()):
        raise ClipauditError(f"{option} {path!r}: expected {{class name: [names]}}, got {type(data).__name__}.")
    return {str(k): [v] if isinstance(v, str) else [str(x) for x in v] for k, v in data.items()}


def file_ref(path: str | None) -> dict[str, str] | None:
    """Provenance of a caption file: its name and SHA-256 (not the local path)."""
    if path is None:
        return None
    return {"file": Path(path).name, "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()}


def training_captions(job: TrainJob, dataset: ImageDataset) -> tuple[CaptionPool, dict[str, Any]]:
    """The caption pool of ``dataset`` and its provenance (templates, synonyms and kind-of files).

    A dataset with its own captions uses them (templates are not used); otherwise each class's captions are
    the templates filled with its name, its synonyms and "a kind of" phrases.
    """
    from ..data.prompts import load_templates

    templates = load_templates(job.templates) if dataset.captions is None else None
    synonyms = resolve_caption_file(job.synonyms, "--synonyms", dataset)
    kind_of = resolve_caption_file(job.kind_of, "--kind-of", dataset)
    pool = caption_pool(dataset, templates, synonyms=read_caption_mapping(synonyms, "--synonyms"),
                        kind_of=read_caption_mapping(kind_of, "--kind-of"))
    return pool, {"templates": job.templates if templates is not None else None, "synonyms": synonyms,
                  "kind_of": kind_of}
