"""Run one registered task from Python, without writing files."""

from __future__ import annotations

from typing import Any

from ._task import TaskResult

__all__ = ["run_task"]


def run_task(name: str, model: Any, dataset: Any, cache: Any = None, *, templates: Any = "openai_imagenet",
             **options: Any) -> TaskResult:
    """Run task ``name`` on a loaded model and dataset; options by keyword (checked like a config table).

    Examples
    --------
    >>> from analysis import load_model, create_dataset, run_task
    >>> result = run_task("zeroshot", load_model("clipaudit-lit"), create_dataset("bundled"))  # doctest: +SKIP
    >>> result.metrics["acc1"]  # doctest: +SKIP
    """
    from . import get_task
    from ._context import TaskContext
    from ._options import from_dict

    task = get_task(name)
    opts = from_dict(task.options, options, name)
    if cache is None:
        from ..cache import EmbeddingCache

        cache = EmbeddingCache()
    ctx = TaskContext(model, dataset, cache, templates=templates, views=task.views(opts))
    return task.run(ctx, opts)
