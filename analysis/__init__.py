"""clipaudit: audit and explain the zero-shot behaviour of CLIP-style models.

The everyday API::

    from analysis import load_model, create_dataset, run_task
    model = load_model("clipaudit-lit")
    result = run_task("zeroshot", model, create_dataset("bundled"))   # any registered task, options by keyword
    result.metrics["acc1"]
"""

from __future__ import annotations

__version__ = "0.1.0"

from ._checks import ClipauditError  # noqa: E402

__all__ = ["__version__", "ClipauditError", "load_model", "create_dataset", "EmbeddingCache", "run_task",
           "list_tasks", "load_templates", "Policy"]


def __getattr__(name: str):  # lazy: importing the package must not import torch
    if name == "load_model":
        from .models import load_model

        return load_model
    if name == "create_dataset":
        from .data import create_dataset

        return create_dataset
    if name == "load_templates":
        from .data import load_templates

        return load_templates
    if name == "EmbeddingCache":
        from .cache import EmbeddingCache

        return EmbeddingCache
    if name == "run_task":
        from .tasks._api import run_task

        return run_task
    if name == "Policy":
        from .policy import Policy

        return Policy
    if name == "list_tasks":
        from .tasks import list_tasks

        return list_tasks
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
