"""Result files: one JSON per run (CLIP_benchmark's fields plus ours) and per-sample tables.

A run of task T on dataset D with model M (weights P) writes, under ``results_dir/T/``::

    D__M__P.json                 {"dataset", "model", "pretrained", "task", "metrics", ...our fields}
    D__M__P.<table>.parquet      each table (per-sample predictions...), also as .csv

The JSON is strict (NaN becomes null) and written atomically; ``tables`` lists the table files.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd

from ._atomic import atomic_path, atomic_write_json

__all__ = ["write_run", "read_run", "run_stem", "write_table", "read_table"]


def _slug(text: str | None) -> str:
    text = "none" if not text else str(text)
    if "/" in text or "\\" in text:  # paths: keep the informative tail
        text = "-".join(Path(text).parts[-2:])
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80] or "none"


def run_stem(task: str, dataset: str, model: str, pretrained: str | None) -> str:
    return f"{_slug(dataset)}__{_slug(model)}__{_slug(pretrained)}"


def write_table(df: pd.DataFrame, path_without_suffix: Path) -> list[str]:
    """Write ``df`` as Parquet and CSV (atomically); return the file names."""
    names = []
    parquet = path_without_suffix.with_name(path_without_suffix.name + ".parquet")
    with atomic_path(parquet, suffix=".parquet") as tmp:
        df.to_parquet(tmp, index=False)
    names.append(parquet.name)
    csv = path_without_suffix.with_name(path_without_suffix.name + ".csv")
    flat = df.copy()
    for col in flat.columns:
        if flat[col].map(lambda v: isinstance(v, (list, tuple))).any():
            flat[col] = flat[col].map(lambda v: " ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
    with atomic_path(csv, suffix=".csv") as tmp:
        flat.to_csv(tmp, index=False)
    names.append(csv.name)
    return names


def read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def write_run(results_dir: str | Path, *, task: str, dataset: str, model: str, pretrained: str | None,
              metrics: dict[str, Any], tables: dict[str, pd.DataFrame] | None = None,
              extra: dict[str, Any] | None = None) -> Path:
    """Write one run's JSON and tables; return the JSON path."""
    from . import __version__

    folder = Path(results_dir) / task
    stem = run_stem(task, dataset, model, pretrained)
    files = {}
    for name, df in (tables or {}).items():
        files[name] = write_table(df, folder / f"{stem}.{name}")
    record = {
        "dataset": dataset, "model": model, "pretrained": pretrained, "task": task, "metrics": metrics,
        "tables": files, "clipaudit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {}),
    }
    return atomic_write_json(folder / f"{stem}.json", record)


def read_run(path: str | Path) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Read a run JSON and its tables (Parquet preferred)."""
    path = Path(path)
    record = json.loads(path.read_text())
    tables = {}
    for name, files in record.get("tables", {}).items():
        parquet = [f for f in files if f.endswith(".parquet")]
        tables[name] = read_table(path.parent / (parquet or files)[0])
    return record, tables
