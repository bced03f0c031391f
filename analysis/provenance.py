"""Run identity: where every output came from, and the file name that follows from it.

A :class:`RunIdentity` holds the model (name, weights source and SHA-256), the data (name, split,
fingerprint, size and, for a subset, how it was drawn), the prompt set (name, size, hash), the task and
its options, the embedding dtype, and the library versions. :meth:`RunIdentity.key` hashes everything that
can change a number (not the versions), and :meth:`RunIdentity.stem` turns it into a file name, so two runs
with different settings never share a file and a re-run with the same settings finds its earlier result.
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunIdentity", "data_identity", "prompt_identity", "versions", "slug", "describe_data",
           "subset_note", "same_images"]


def slug(text: str | None) -> str:
    """File-name-safe short form of ``text`` (paths keep their last two parts)."""
    text = "none" if not text else str(text)
    if "/" in text or "\\" in text:
        text = "-".join(Path(text).parts[-2:])
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "none"


def versions() -> dict[str, str]:
    """Versions of clipaudit and the libraries that change numbers."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    out = {"clipaudit": __version__, "python": platform.python_version()}
    for dist, key in (("torch", "torch"), ("open_clip_torch", "open_clip"), ("numpy", "numpy"),
                      ("scikit-learn", "scikit-learn"), ("pot", "pot"), ("nltk", "nltk")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "not installed"
    return out


def _subset_info(dataset: Any) -> dict[str, Any] | None:
    info = getattr(dataset, "subset_info", None)
    if callable(info):
        return info()
    parent, indices = getattr(dataset, "parent", None), getattr(dataset, "indices", None)
    if parent is None or indices is None:
        return None
    return {"kind": "indices", "limit": None, "seed": None, "n": len(dataset), "of": len(parent),
            "indices_sha256": hashlib.sha256(json.dumps([int(i) for i in indices]).encode()).hexdigest()}


def data_identity(dataset: Any) -> dict[str, Any]:
    """Name, split, fingerprint, size and subset description of a dataset (JSON-able)."""
    return {"name": dataset.name, "split": getattr(dataset, "split", None) or "unspecified",
            "fingerprint": dataset.fingerprint(), "n_images": len(dataset),
            "n_classes": len(dataset.classnames), "subset": _subset_info(dataset)}


def prompt_identity(templates: Any) -> dict[str, Any] | None:
    """Name, size and content hash of a prompt set (None when the task uses none)."""
    if templates is None:
        return None
    return {"name": templates.name, "n_templates": len(templates), "sha256": templates.fingerprint()}


def subset_note(data: dict[str, Any]) -> str | None:
    """'subset: 300 of 1,000 images (stratified, seed 0)' for a subset, None for the whole split."""
    sub = data.get("subset")
    if not sub:
        return None
    how = sub.get("kind") or "chosen"
    extra = f", seed {sub['seed']}" if sub.get("seed") is not None else ""
    return f"subset: {sub['n']:,} of {sub['of']:,} images ({how}{extra})"


def describe_data(data: dict[str, Any]) -> str:
    """One line: 'bundled-fashion-mnist, test split, subset: 300 of 1,000 images (stratified, seed 0)'."""
    text = f"{data['name']}, {data.get('split', 'unspecified')} split"
    note = subset_note(data)
    return f"{text}, {note}" if note else f"{text}, all {data.get('n_images', 0):,} images"


def same_images(records: list[dict[str, Any]]) -> bool:
    """True when every record with a data identity ran on the same images (same fingerprint)."""
    prints = {r["identity"]["data"]["fingerprint"] for r in records if r.get("identity")}
    return len(prints) <= 1


@dataclass(frozen=True)
class RunIdentity:
    """Everything that identifies one task run on one model and one dataset."""

    task: str
    model: dict[str, Any]
    data: dict[str, Any]
    prompts: dict[str, Any] | None
    options: dict[str, Any]
    embedding_dtype: str = "float16"
    versions: dict[str, str] = field(default_factory=dict, compare=False)

    def key(self) -> str:
        """12 hex digits of SHA-256 over everything that can change a number (versions excluded)."""
        payload = {k: v for k, v in asdict(self).items() if k != "versions"}
        blob = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def stem(self) -> str:
        """File stem: ``<dataset>[-subset<N>]__<model>__<weights>__<key>``."""
        sub = self.data.get("subset")
        data = slug(self.data["name"]) + (f"-subset{sub['n']}" if sub else "")
        return f"{data}__{slug(self.model.get('name'))}__{slug(self.model.get('pretrained'))}__{self.key()}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key()}

    @property
    def is_subset(self) -> bool:
        return bool(self.data.get("subset"))
