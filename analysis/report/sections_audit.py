"""Report section of the audit record (task ``audit``): stages, their status and timings, run facts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .build import SECTIONS, Block, metrics_block, table_block, text_block

__all__ = ["audit_section"]


def audit_section(record: dict[str, Any], tables: dict[str, pd.DataFrame], path: Path) -> list[Block]:
    m = record["metrics"]
    blocks: list[Block] = [metrics_block({k: v for k, v in m.items() if not k.startswith(("seconds.", "cache."))})]
    stages = tables.get("stages")
    if stages is not None and len(stages):
        blocks.append(table_block("stages (a failed or skipped stage says why)", stages))
        bad = stages[stages["status"].isin(["failed", "skipped"])]
        for r in bad.to_dict("records"):
            blocks.append(text_block(f"{r['stage']} {r['status']}: {r['message']}"))
    identity = record.get("identity") or {}
    info = identity.get("model") or record.get("model_info") or {}
    data = identity.get("data") or {}
    facts = {"model": record.get("model"), "pretrained": record.get("pretrained"), "source": info.get("source"),
             "weights sha256": info.get("weights_sha256"), "dataset": record.get("data") or record.get("dataset"),
             "images": record.get("dataset_size"), "classes": record.get("n_classes"),
             "dataset fingerprint": data.get("fingerprint") or record.get("dataset_fingerprint"),
             "prompt set": record.get("templates"),
             "prompt set sha256": (identity.get("prompts") or {}).get("sha256"),
             **{f"version: {k}": v for k, v in (record.get("versions") or {}).items()},
             **{f"cache: {k}": v for k, v in (record.get("cache_stats") or {}).items()},
             "total seconds": record.get("seconds")}
    blocks.append(table_block("run facts", pd.DataFrame({"fact": list(facts), "value": [
        "" if v is None else str(v) for v in facts.values()]})))
    return blocks


SECTIONS.register("audit", ("Audit: stages and run facts", 1, audit_section))
