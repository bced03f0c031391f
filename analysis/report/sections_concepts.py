"""Report section of the mutual-knowledge concepts run (task ``concepts``).

Per-class figures are the PNGs the concepts stage wrote next to the run (``figures``: class -> path
relative to the run JSON); MI removal curves are drawn from the ``curves`` table; the per-class table
holds MI, the AUCs and the descriptors assigned most often.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .build import SECTIONS, Block, figure_block, metrics_block, run_file, table_block, text_block
from .figures import lines_figure, png_uri

__all__ = ["concepts_section"]


def _join(v: Any) -> Any:
    return "; ".join(map(str, v)) if isinstance(v, (list, tuple)) or hasattr(v, "tolist") else v


def concepts_section(record: dict[str, Any], tables: dict[str, pd.DataFrame], path: Path) -> list[Block]:
    blocks: list[Block] = [metrics_block(record["metrics"])]
    cfg = record.get("config") or {}
    blocks.append(text_block(
        f"Classes: {', '.join(map(str, (record.get('figures') or {}).keys())) or 'none'}"
        + (f" ({record['class_selection']})" if record.get("class_selection") else "")
        + f"; {record.get('images_per_class')} images per class; descriptor pool {record.get('descriptor_pool')} "
        f"({record.get('n_descriptors')} descriptors); MI variant {cfg.get('mi_variant')}; "
        f"foreground {cfg.get('foreground')}, CRF {'on' if cfg.get('use_crf') else 'off'}."))
    for cname, rel in (record.get("figures") or {}).items():
        png = run_file(record, path, rel)
        if png.is_file():
            blocks.append({"kind": "images", "caption": cname,
                           "images": [{"uri": png_uri(png.read_bytes()),
                                       "caption": f"{cname}: image, foreground, concept segments, visual prompt"}]})
    curves = tables.get("curves")
    if curves is not None and len(curves):
        series = {f"{c} · {m}": (g["step"].tolist(), g["mi"].tolist())
                  for (c, m), g in curves.groupby(["class", "method"], sort=False)}
        blocks.append(figure_block("MI removal curves (descriptors removed in order of relevance)",
                                   lines_figure(series, xlabel="descriptors removed", ylabel="mutual information"),
                                   {k: {"step": a, "mi": b} for k, (a, b) in series.items()}))
    per_class = tables.get("per_class")
    if per_class is not None and len(per_class):
        df = per_class.drop(columns=[c for c in ("curve",) if c in per_class]).copy()
        if "top_descriptors" in df:
            df["top_descriptors"] = df["top_descriptors"].map(_join)
        blocks.append(table_block("per class: MI, AUC and the descriptors assigned most often", df))
    per_image = tables.get("per_image")
    if per_image is not None and len(per_image):
        cols = [c for c in ("item", "class", "pred_name", "method", "n_concepts", "assigned", "mi",
                            "auc_reference") if c in per_image]
        blocks.append(table_block("assigned descriptors per image and concept", per_image[cols], max_rows=60))
    return blocks


SECTIONS.register("concepts", ("Concepts (mutual knowledge)", 40, concepts_section))
