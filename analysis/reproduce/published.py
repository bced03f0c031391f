"""The papers' published numbers: one CSV shipped with the package (``published.csv``), never in code.

Columns (:data:`COLUMNS`): ``paper`` (citation), ``paper_table`` (the paper's own label, "Tab. 1"),
``table`` (our table id, a :data:`analysis.reproduce.TABLES` name), ``model`` (the paper's backbone
name, e.g. "ViT-B/16"), ``dataset`` (a :data:`analysis.data.DATASETS` name), ``row``, ``column``,
``value`` (empty = the number is not in our sources; ``notes`` says so), ``unit``, ``source`` (where the
number was transcribed from), ``notes``.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from .._checks import ClipauditError

__all__ = ["COLUMNS", "KEY", "published_path", "load_published", "check_published"]

COLUMNS = ("paper", "paper_table", "table", "model", "dataset", "row", "column", "value", "unit", "source", "notes")
#: Columns identifying one number.
KEY = ("table", "model", "dataset", "row", "column")


def published_path() -> str:
    """Path of the shipped ``published.csv`` (works from a wheel)."""
    return str(resources.files(__package__).joinpath("published.csv"))


def check_published(df: pd.DataFrame, origin: str = "published.csv") -> pd.DataFrame:
    """Validate the schema: every column present, every row sourced, keys unique, values numeric or empty."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ClipauditError(f"{origin}: missing column(s) {missing}; expected {list(COLUMNS)}.")
    for col in ("paper", "paper_table", "table", "model", "dataset", "row", "column", "unit", "source"):
        empty = df[col].isna() | (df[col].astype(str).str.strip() == "")
        if empty.any():
            lines = (np.flatnonzero(empty) + 2)[:5].tolist()
            raise ClipauditError(f"{origin}: column {col!r} is empty on line(s) {lines}.")
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = df["value"].notna() & values.isna()
    if bad.any():
        raise ClipauditError(f"{origin}: non-numeric value(s) {df.loc[bad, 'value'].tolist()[:5]}.")
    unsourced = values.isna() & df["notes"].fillna("").str.strip().eq("")
    if unsourced.any():
        raise ClipauditError(f"{origin}: rows without a value must say why in 'notes' (lines "
                             f"{(np.flatnonzero(unsourced) + 2)[:5].tolist()}).")
    dup = df.duplicated(list(KEY), keep=False)
    if dup.any():
        raise ClipauditError(f"{origin}: duplicate keys {df.loc[dup, list(KEY)].head(3).to_dict('records')}.")
    out = df.copy()
    out["value"] = values
    out["notes"] = out["notes"].fillna("")
    return out


def load_published(table: str | None = None) -> pd.DataFrame:
    """The published numbers (all, or those of one table id), schema-checked."""
    df = pd.read_csv(published_path(), dtype={"row": str, "value": object}, keep_default_na=False,
                     na_values={"value": [""]})
    df = check_published(df)
    return df if table is None else df[df["table"] == table].reset_index(drop=True)
