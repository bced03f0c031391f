"""The task registry: every pipeline is one module here that registers one :class:`Task`.

The CLI subcommands (``clipaudit zeroshot``, ...), the audit's stages, its TOML schema, the headline
metrics and the report sections are generated from this registry; no other module lists the tasks.
Adding a pipeline = one module in this package calling :func:`register` (see ``linear_probe.py``).

Modules are discovered with :mod:`pkgutil` (private modules, ``_*.py``, are the machinery). Importing
them is light: a task's heavy imports happen inside its ``run``.
"""

from __future__ import annotations

import importlib
import pkgutil

from .._registry import Registry
from ._task import Task, TaskResult, TaskSkipped

__all__ = ["Task", "TaskResult", "TaskSkipped", "TASKS", "register", "get_task", "list_tasks", "task_names"]

TASKS: Registry[Task] = Registry("task")
_loaded = False


def register(task: Task) -> Task:
    """Add ``task`` to the registry (called once by the task's own module)."""
    return TASKS.register(task.name, task, task.help)


def _discover() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def get_task(name: str) -> Task:
    """The registered task ``name`` (an unknown name raises with the known ones and a close match)."""
    _discover()
    return TASKS.get(name)


def list_tasks() -> list[Task]:
    """Every task in run order: ``order`` first, then so that each task comes after those in its ``after``."""
    _discover()
    tasks = sorted((TASKS.get(n) for n in TASKS.list()), key=lambda t: (t.order, t.name))
    done: list[Task] = []
    pending = list(tasks)
    while pending:
        names = {t.name for t in done}
        ready = next((t for t in pending if all(a in names or a not in TASKS for a in t.after)), pending[0])
        done.append(ready)
        pending.remove(ready)
    return done


def task_names() -> list[str]:
    return [t.name for t in list_tasks()]
