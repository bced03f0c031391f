"""The task contract: what a pipeline declares to be run by the CLI, the audit and the reproduction tables.

A task is one module in :mod:`analysis.tasks` that registers one :class:`Task`:

- ``options``: a dataclass built with :func:`analysis.tasks._options.option` (defaults, choices and help
  live only there);
- ``run(ctx, options) -> TaskResult``: reads what it needs from the :class:`~analysis.tasks._context.TaskContext`
  (the model, the dataset, the one :class:`~analysis.classifier.ClassifierState`, typed outputs of earlier
  tasks) and returns metrics, tables, files and a typed ``value`` for later tasks; it never writes files;
- ``after``: tasks whose output it uses when they ran (run order only; a task computes what it needs
  itself when they did not run);
- ``views``: the image perturbations it needs encoded, so one decode pass serves every task.

Everything here is import-light: registering a task imports no torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from ._context import TaskContext

__all__ = ["Task", "TaskResult", "TaskSkipped"]


class TaskSkipped(Exception):  # noqa: N818 - control flow, not an error
    """Raised by a task that does not apply (no captions, no WordNet, no train split...): the reason is shown."""


@dataclass
class TaskResult:
    """What a task made.

    Attributes
    ----------
    metrics : dict
        Name -> number (strict JSON: NaN is written as null).
    tables : dict of str -> DataFrame
        Written as Parquet + CSV beside the run JSON.
    files : dict of str -> bytes
        Figures and thumbnails, by relative name; written beside the run JSON, named in it.
    info : dict
        Further JSON fields of the run record (class names, skipped images, how things were computed).
    value : any
        A typed output for later tasks (see :meth:`TaskContext.output`); not written.
    """

    metrics: dict[str, Any]
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    value: Any = None


@dataclass(frozen=True)
class Task:
    """A registered pipeline.

    Attributes
    ----------
    name : str
        CLI subcommand, audit stage and config table (``clipaudit zeroshot``, ``[zeroshot]``).
    help, description : str
        One line for command lists; the long ``--help`` text with examples.
    options : type
        The options dataclass.
    run : callable (TaskContext, options) -> TaskResult
    result_name : str
        The ``task`` field of the run JSON and the results sub-folder (CLIP_benchmark's names where it has
        one: ``zeroshot_classification``, ``zeroshot_retrieval``, ``linear_probe``).
    title : str
        Report section title.
    headline : tuple of str
        Metric keys shown in summaries and in the side-by-side table.
    after : tuple of str
        Tasks to run first when enabled (their typed outputs are offered to this one).
    views : callable options -> sequence of str
        Image perturbations this task needs encoded besides the original view.
    uses_classifier : bool
        The task reads the zero-shot classifier (needs class names).
    in_audit : bool
        Enabled in ``clipaudit audit`` by default.
    summary : callable (TaskResult) -> str, optional
        Console text after a single-task command (default: the metrics).
    order : int
        Run and report order among tasks (then ``after`` is honoured).
    """

    name: str
    help: str
    description: str
    options: type
    run: Callable[[TaskContext, Any], TaskResult]
    result_name: str = ""
    title: str = ""
    headline: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    views: Callable[[Any], Sequence[str]] = lambda _options: ()
    uses_classifier: bool = True
    in_audit: bool = True
    summary: Callable[[TaskResult], str] | None = None
    order: int = 100

    @property
    def cli_name(self) -> str:
        """Command-line spelling: ``linear-probe`` for the task ``linear_probe``."""
        return self.name.replace("_", "-")

    def __post_init__(self) -> None:
        if not self.result_name:
            object.__setattr__(self, "result_name", self.name)
        if not self.title:
            object.__setattr__(self, "title", self.name)
