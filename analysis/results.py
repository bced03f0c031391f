"""Result files: one JSON per run (CLIP_benchmark's fields plus ours) and per-sample tables.

A run of task T writes, under ``results_dir/T/``, files named by its :class:`~analysis.provenance.RunIdentity`
(:meth:`~analysis.provenance.RunIdentity.stem`: dataset, subset size, model, weights and a hash of every
setting), so runs with different settings never overwrite each other::

    STEM.json                 {"dataset", "model", "pretrained", "task", "metrics", "identity", ...}
    STEM.<table>.parquet      each table (per-sample predictions...), also as .csv
    STEM.files/<name>         figures and thumbnails named in the JSON's "files"

The JSON is strict (NaN becomes null) and written atomically; ``tables`` lists the table files.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._atomic import atomic_path, atomic_write_bytes, atomic_write_json
from .provenance import slug

if TYPE_CHECKING:
    import pandas as pd

    from .provenance import RunIdentity

__all__ = ["write_run", "read_run", "run_stem", "write_table", "read_table", "write_identified_run", "run_path",
           "output_folder"]


def output_folder(path: str | Path, option: str = "--out") -> Path:
    """``path`` as a folder to write results into (created); a file there is one clear error, not a traceback."""
    from ._checks import ClipauditError

    path = Path(path)
    for parent in (path, *path.parents):
        if parent.exists() and not parent.is_dir():
            raise ClipauditError(f"{option} {str(path)!r}: {str(parent)!r} is a file, not a folder; give a folder "
                                 "for the results.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ClipauditError(f"{option} {str(path)!r} cannot be created: {err.strerror or err}.") from None
    return path


def run_stem(task: str, dataset: str, model: str, pretrained: str | None) -> str:
    """Stem of a run without an identity (reproduction tables name their own)."""
    return f"{slug(dataset)}__{slug(model)}__{slug(pretrained)}"


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
    import pandas as pd

    path = Path(path)
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


def write_run(results_dir: str | Path, *, task: str, dataset: str, model: str, pretrained: str | None,
              metrics: dict[str, Any], tables: dict[str, pd.DataFrame] | None = None,
              extra: dict[str, Any] | None = None, stem: str | None = None,
              files: dict[str, bytes] | None = None) -> Path:
    """Write one run's JSON, tables and files under ``results_dir/task/``; return the JSON path.

    The JSON is written last, so a run whose JSON exists is complete.
    """
    from . import __version__

    folder = Path(results_dir) / task
    stem = stem or run_stem(task, dataset, model, pretrained)
    table_files = {}
    for name, df in (tables or {}).items():
        table_files[name] = write_table(df, folder / f"{stem}.{name}")
    file_names = {}
    for name, data in (files or {}).items():
        rel = f"{stem}.files/{name}"
        atomic_write_bytes(folder / rel, data)
        file_names[name] = rel
    record = {
        "dataset": dataset, "model": model, "pretrained": pretrained, "task": task, "metrics": metrics,
        "tables": table_files, "files": file_names, "clipaudit_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **(extra or {}),
    }
    return atomic_write_json(folder / f"{stem}.json", record)


def write_identified_run(results_dir: str | Path, identity: RunIdentity, *, result_name: str,
                         metrics: dict[str, Any], tables: dict[str, pd.DataFrame] | None = None,
                         files: dict[str, bytes] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """:func:`write_run` for a task run: named by ``identity.stem()``, with the identity in the record."""
    model = identity.model
    return write_run(results_dir, task=result_name, dataset=identity.data["name"], model=model.get("name"),
                     pretrained=model.get("pretrained"), metrics=metrics, tables=tables, files=files,
                     extra={**(extra or {}), "identity": identity.as_dict(), "versions": identity.versions},
                     stem=identity.stem())


def run_path(results_dir: str | Path, identity: RunIdentity, result_name: str) -> Path:
    """Where :func:`write_identified_run` puts the JSON of ``identity``."""
    return Path(results_dir) / result_name / f"{identity.stem()}.json"


def read_run(path: str | Path) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Read a run JSON and its tables (Parquet preferred)."""
    path = Path(path)
    record = json.loads(path.read_text())
    tables = {}
    for name, files in record.get("tables", {}).items():
        parquet = [f for f in files if f.endswith(".parquet")]
        tables[name] = read_table(path.parent / (parquet or files)[0])
    return record, tables
