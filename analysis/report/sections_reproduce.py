"""Report section for ``clipaudit reproduce``: our numbers next to the paper's, subset runs flagged, provenance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .build import SECTIONS, Block, table_block, text_block

__all__ = ["reproduce_section"]

SHOWN = ["model", "paper_model", "dataset", "row", "column", "ours", "published", "diff", "unit", "n_images"]


def reproduce_section(record: dict[str, Any], tables: dict[str, pd.DataFrame], path: Path) -> list[Block]:
    """Title, the subset/full statement, missing datasets, the side-by-side table, the sources and the provenance
    (models with weights hash, data with subset, prompt set, settings key) as the run JSON states it."""
    blocks: list[Block] = [text_block(f"{record.get('title', record.get('table'))} — {record.get('paper', '')}")]
    note = record.get("subset_note", "")
    blocks.append(text_block(("WARNING: " + note) if record.get("subset") else note))
    for name, msg in (record.get("missing_datasets") or {}).items():
        blocks.append(text_block(f"Dataset {name} not run: {msg}"))
    df = tables.get("comparison")
    if df is not None and len(df):
        blocks.append(table_block("ours vs published", df[[c for c in SHOWN if c in df.columns]],
                                  floatfmt="{:.3f}"))
        src = df[["paper", "paper_table", "source"]].dropna().drop_duplicates()
        if len(src):
            blocks.append(table_block("where the published numbers come from", src))
        notes = sorted({n for col in ("notes", "published_notes") if col in df for n in df[col].dropna() if n})
        if notes:
            blocks.append(text_block("Notes: " + " · ".join(notes)))
    if record.get("provenance"):
        blocks.append(text_block("Provenance: " + " · ".join(record["provenance"])))
    return blocks


SECTIONS.register("reproduce", ("Reproduction of published tables", 80, reproduce_section))
