"""Reproduction of the papers' tables, our numbers next to the published ones.

``TABLES`` lists the tables (``clipaudit reproduce --list``); :func:`run_table` runs one on a
:class:`ReproContext` and :func:`write_result` writes CSV + Markdown + the run JSON the report shows.
Published numbers live in ``published.csv`` (:func:`load_published`), never in code.
"""

from . import demo, ge2023, radford2021, sammani2024  # noqa: F401  (register the tables)
from .core import (
    TABLES,
    ModelEntry,
    ReproContext,
    TableResult,
    TableSpec,
    compare,
    paper_model_name,
    run_table,
    subset_note,
    to_markdown,
    write_result,
)
from .published import COLUMNS, load_published, published_path

__all__ = [
    "TABLES", "ModelEntry", "ReproContext", "TableResult", "TableSpec", "compare", "paper_model_name", "run_table",
    "subset_note", "to_markdown", "write_result", "COLUMNS", "load_published", "published_path",
]
