"""Section builders for the foundation's tasks (zero-shot classification, retrieval).

Pipelines add their own builders to :data:`analysis.report.build.SECTIONS` in modules imported here.
"""

from __future__ import annotations

import pkgutil
from importlib import import_module
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .build import SECTIONS, Block, figure_block, metrics_block, table_block, text_block
from .figures import bar_figure, confusion_figure

__all__ = ["zeroshot_section", "retrieval_section"]


def zeroshot_section(record: dict[str, Any], tables: dict[str, pd.DataFrame], path: Path) -> list[Block]:
    blocks: list[Block] = [metrics_block(record["metrics"])]
    classnames = record.get("classnames") or []
    preds = tables.get("predictions")
    if preds is not None and len(preds) and classnames:
        n = len(classnames)
        per_class = (
            preds.groupby("label")["correct"].agg(["mean", "size"]).reindex(range(n)).reset_index()
        )
        per_class.insert(1, "class", [classnames[i] for i in per_class["label"]])
        per_class = per_class.rename(columns={"mean": "accuracy", "size": "images"}).drop(columns="label")
        shown = per_class.dropna().sort_values("accuracy")
        blocks.append(figure_block(
            "per-class accuracy (worst first)",
            bar_figure(shown["class"].tolist(), shown["accuracy"].tolist(), xlabel="top-1 accuracy"),
            {"class": shown["class"].tolist(), "accuracy": shown["accuracy"].tolist()},
        ))
        if n <= 40:
            cm = np.zeros((n, n), dtype=int)
            np.add.at(cm, (preds["label"].to_numpy(), preds["pred"].to_numpy()), 1)
            blocks.append(figure_block("confusion matrix (rows: true class, row-normalised)",
                                       confusion_figure(cm, classnames), {"counts": cm.tolist()}))
        else:
            blocks.append(text_block(f"{n} classes: confusion matrix omitted; see the per-class table."))
        blocks.append(table_block("per-class accuracy", per_class))
    skipped = record.get("skipped") or []
    if skipped:
        blocks.append(table_block("unreadable images (skipped)", pd.DataFrame(skipped)))
    blocks.append(text_block(
        f"Prompt set: {record.get('templates')} ({record.get('n_templates')} templates); logits = "
        f"{record.get('logit_scale', float('nan')):.2f} x cosine"
        + (f" + {record['logit_bias']:.2f}" if record.get("logit_bias") is not None else "")
        + "; softmax over these logits."
    ))
    return blocks


def retrieval_section(record: dict[str, Any], tables: dict[str, pd.DataFrame], path: Path) -> list[Block]:
    """Recall@k per direction; a k above a direction's number of candidates is shown as omitted, not as 1."""
    m = record["metrics"]
    ks = sorted({int(k.split("@")[1]) for k in m if "@" in k})
    candidates = {"image_to_text": m.get("n_texts"), "text_to_image": m.get("n_images")}

    def cell(direction: str, k: int) -> Any:
        value = m.get(f"{direction}_recall@{k}")
        if value is not None:
            return float(value)
        n = candidates[direction]
        return f"n/a (only {n} candidates)" if n is not None else "n/a"

    df = pd.DataFrame({
        "k": ks,
        "image→text recall": [cell("image_to_text", k) for k in ks],
        "text→image recall": [cell("text_to_image", k) for k in ks],
    })
    return [metrics_block({k: v for k, v in m.items() if "@" not in k}), table_block("recall@k", df)]


SECTIONS.register("zeroshot_classification", ("Zero-shot accuracy", 10, zeroshot_section))
SECTIONS.register("zeroshot_retrieval", ("Retrieval", 60, retrieval_section))

# Pipelines' own section builders: every ``sections_*`` module of this package registers itself on import.
for _info in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _info.name.startswith("sections_"):
        import_module(f"{__package__}.{_info.name}")
