"""Report section of the WordNet hierarchy reranking run (task ``hierarchy_rerank``).

The before/after table has the paper's Table 1 columns (top-1 on the full set, on the low-confidence
set O and on the rest); fixed and broken predictions are shown with the thumbnails the audit saved next
to the run (``examples`` table, PNG paths relative to the run JSON), so no model or dataset is needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .build import SECTIONS, Block, metrics_block, run_file, table_block, text_block
from .figures import png_uri

__all__ = ["hierarchy_section", "before_after_table"]


def before_after_table(metrics: dict[str, Any]) -> pd.DataFrame:
    """Tab. 1 layout: rows full set / low confidence (O) / rest; columns images, before, after, change."""
    rows = []
    for label, key, n in (("full set", "acc1", metrics.get("n")), ("low confidence (O)", "acc1_low",
                                                                   metrics.get("n_low")),
                          ("rest", "acc1_high", None if metrics.get("n") is None or metrics.get("n_low") is None
                           else metrics["n"] - metrics["n_low"])):
        before, after = metrics.get(f"{key}_before"), metrics.get(f"{key}_after")
        change = after - before if isinstance(before, float) and isinstance(after, float) else None
        rows.append({"images": label, "n": n, "top-1 before": before, "top-1 after": after, "change": change})
    return pd.DataFrame(rows)


def _thumbnails(examples: pd.DataFrame, record: dict[str, Any], path: Path, kind: str) -> Block | None:
    images = []
    for r in examples[examples["kind"] == kind].to_dict("records"):
        rel = r.get("thumbnail")
        png = run_file(record, path, rel) if isinstance(rel, str) and rel else None
        if png is None or not png.is_file():
            continue
        images.append({"uri": png_uri(png.read_bytes()),
                       "caption": f"{r['item']}: true {r['label']}; {r['before']} → {r['after']}"})
    return {"kind": "images", "caption": kind, "images": images} if images else None


def hierarchy_section(record: dict[str, Any], tables: dict[str, pd.DataFrame], path: Path) -> list[Block]:
    m = record["metrics"]
    blocks: list[Block] = [metrics_block({k: m[k] for k in ("n", "n_low", "low_fraction", "n_changed", "n_fixed",
                                                            "n_broken", "n_changed_wrong_to_wrong",
                                                            "topk_low_upper_bound") if k in m})]
    blocks.append(table_block("top-1 accuracy before / after reranking (Table 1 columns)", before_after_table(m)))
    opts = record.get("options") or {}
    blocks.append(text_block(
        f"Reranked: {record.get('set', 'low-confidence')} images ({record.get('low_confidence_source', '')}); "
        f"variant {record.get('variant')}, candidates: top-{opts.get('top_k', 5)} of the "
        f"{record.get('candidates')} classifier; text \"{record.get('template')}\"; WordNet "
        f"{record.get('wordnet_version')}, class map {record.get('class_map')}; "
        f"{len(record.get('unmapped_classes') or [])} unmapped class(es)."))
    examples = tables.get("examples")
    if examples is not None and len(examples):
        for kind, title in (("fixed", "fixed: wrong before, right after"),
                            ("broken", "broken: right before, wrong after")):
            block = _thumbnails(examples, record, path, kind)
            if block is not None:
                blocks.append(text_block(title))
                blocks.append(block)
        blocks.append(table_block("fixed and broken examples", examples.drop(columns=["thumbnail"])))
    elif m.get("n_fixed", 0) or m.get("n_broken", 0):
        blocks.append(text_block("No example thumbnails in these results (the images could not be read when "
                                 "the run was made)."))
    per_class = tables.get("per_class")
    if per_class is not None and len(per_class):
        blocks.append(table_block("per class", per_class))
    return blocks


SECTIONS.register("hierarchy_rerank", ("Hierarchy reranking (WordNet)", 30, hierarchy_section))
