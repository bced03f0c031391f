"""Reproduction of the papers' tables, our numbers next to the published ones.

``TABLES`` lists the tables (``clipaudit reproduce --list``); :func:`run_table` runs one on a
:class:`ReproContext` and :func:`write_result` writes CSV + Markdown + the run JSON the report shows.
Every table's numbers come from the task modules on one task context per model x dataset x prompt set.
Published numbers live in ``published.csv`` (:func:`load_published`), never in code.

Importing this package is light (its option dataclasses build ``clipaudit reproduce --help``); the table
modules, pandas and the pipelines are imported on first use of a name below.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "TABLES", "ModelEntry", "ReproContext", "TableResult", "TableSpec", "compare", "paper_model_name", "run_table",
    "get_table", "subset_note", "to_markdown", "write_result", "COLUMNS", "load_published", "published_path",
    "GeOptions", "MutualKnowledgeOptions", "DemoOptions",
]

_FROM = {"COLUMNS": "published", "load_published": "published", "published_path": "published",
         "GeOptions": "options", "MutualKnowledgeOptions": "options", "DemoOptions": "options"}


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = _FROM.get(name, "core")
    if module == "core":
        importlib.import_module(f"{__name__}.core").load_tables()  # every table registered
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__() -> list[str]:
    return sorted(__all__)
