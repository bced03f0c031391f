"""Run registered tasks on one model and one dataset: one context, one classifier state, identified outputs.

:func:`run_tasks` is what ``clipaudit <task>``, ``clipaudit audit`` and the reproduction tables call. It
collects the image views every task needs (one decode pass), runs the tasks in registry order, hands each
task's typed output to the later ones, and writes each result under a file name derived from its
:class:`~analysis.provenance.RunIdentity`.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._checks import ClipauditError
from ..provenance import RunIdentity, data_identity, describe_data, prompt_identity, versions
from ._context import TaskContext
from ._options import to_dict
from ._task import Task, TaskSkipped

__all__ = ["TaskRecord", "run_tasks", "task_identity"]

log = logging.getLogger(__name__)


@dataclass
class TaskRecord:
    """Outcome of one task on one model: status ("ok", "skipped", "failed", "reused"), time, where, headline."""

    task: str
    model: str
    status: str
    seconds: float = 0.0
    message: str = ""
    path: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    traceback: str = ""
    result: Any = None


def task_identity(task: Task, options: Any, model: Any, data: dict[str, Any], templates: Any,
                  embedding_dtype: str, vers: dict[str, str] | None = None) -> RunIdentity:
    """The identity of ``task`` run with ``options`` on ``model`` and the data described by ``data``."""
    return RunIdentity(task=task.name, model=model.info.as_dict(), data=data,
                       prompts=prompt_identity(templates) if task.uses_classifier else None,
                       options=to_dict(options), embedding_dtype=embedding_dtype, versions=vers or {})


def run_tasks(model: Any, dataset: Any, cache: Any, plan: Sequence[tuple[Task, Any]], *, out_dir: str | Path,
              templates: Any = "openai_imagenet", run_id: str | None = None, skip_existing: bool = False,
              catch: bool = True, echo: Callable[[str], None] | None = None,
              extra: dict[str, Any] | None = None, data_options: Any = None) -> list[TaskRecord]:
    """Run ``plan`` (tasks with their options, in order) and write each result under ``out_dir``.

    Parameters
    ----------
    model, dataset, cache
        A loaded ClipModel, an ImageDataset and the EmbeddingCache (the only encoder).
    plan : sequence of (Task, options)
    out_dir : path
        Results go to ``out_dir/<task.result_name>/<identity stem>.json`` (+ tables and files).
    templates : str or TemplateSet
        The prompt set of every classifier task.
    run_id : str, optional
        Written on every record, so a report can keep only one run's records.
    skip_existing : bool
        Reuse a finished result with the same identity instead of recomputing it.
    catch : bool
        Record a failing task and go on (the audit); False re-raises (single commands).
    echo : callable, optional
        Receives one line per task start/end.
    extra : dict, optional
        Further fields for every record.
    data_options : DataOptions, optional
        How ``dataset`` was named (lets a task load another split of it).

    Returns
    -------
    list of TaskRecord
    """
    import json

    from ..results import output_folder, run_path, write_identified_run

    output_folder(out_dir)
    echo = echo or (lambda _line: None)
    views = [v for task, opts in plan for v in task.views(opts)]
    ctx = TaskContext(model, dataset, cache, templates=templates, views=views, echo=echo, data_options=data_options)
    data = data_identity(dataset)
    vers = versions()
    label = model.info.name + (f" ({model.info.pretrained})" if model.info.pretrained else "")
    records: list[TaskRecord] = []
    for i, (task, opts) in enumerate(plan, 1):
        identity = task_identity(task, opts, model, data, ctx.templates if task.uses_classifier else None,
                                 cache.dtype, vers)
        target = run_path(out_dir, identity, task.result_name)
        if skip_existing and target.is_file():
            record = json.loads(target.read_text())
            records.append(TaskRecord(task.name, label, "reused", 0.0, "same settings: earlier result reused",
                                      target, {k: record["metrics"].get(k) for k in task.headline
                                               if k in record["metrics"]}, identity.key()))
            echo(f"  [{i}/{len(plan)}] {task.name}: reused {target}")
            continue
        echo(f"  [{i}/{len(plan)}] {task.name} ...")
        t0 = time.perf_counter()
        try:
            result = task.run(ctx, opts)
            ctx.outputs[task.name] = result.value
            path = write_identified_run(
                out_dir, identity, result_name=task.result_name, metrics=result.metrics, tables=result.tables,
                files=result.files,
                extra={"run_id": run_id, "title": task.title, "headline": list(task.headline),
                       "data": describe_data(data), "subset": data["subset"], "options": to_dict(opts),
                       **(extra or {}), **result.info})
            rec = TaskRecord(task.name, label, "ok", time.perf_counter() - t0, path=path,
                             metrics={k: result.metrics[k] for k in task.headline if k in result.metrics},
                             key=identity.key(), result=result)
        except TaskSkipped as why:
            if not catch:
                raise ClipauditError(f"{task.name} does not apply here: {why}") from None
            rec = TaskRecord(task.name, label, "skipped", time.perf_counter() - t0, str(why), key=identity.key())
        except KeyboardInterrupt:
            raise
        except Exception as err:  # noqa: BLE001 - a failed task is recorded; the others still run
            if not catch:
                raise
            log.debug("task %s failed", task.name, exc_info=True)
            message = str(err) if isinstance(err, ClipauditError) else f"{type(err).__name__}: {err}"
            rec = TaskRecord(task.name, label, "failed", time.perf_counter() - t0, message, key=identity.key(),
                             traceback="" if isinstance(err, ClipauditError) else traceback.format_exc(limit=8))
        echo(f"  [{i}/{len(plan)}] {task.name}: {rec.status} in {rec.seconds:.1f} s"
             + (f" ({rec.message})" if rec.message and rec.status != "ok" else ""))
        records.append(rec)
    return records
