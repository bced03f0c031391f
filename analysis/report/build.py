"""Results folder -> one self-contained HTML report plus a JSON sidecar with everything it shows.

The report reads only result files (run JSONs and their tables), never a model, so
``clipaudit report RESULTS_DIR`` can rebuild it anywhere. A folder with a ``runs.json`` (an audit) is
read through it: only the files of that run are shown, never stale ones from an earlier run. A task may
have a section builder in :data:`SECTIONS`; any other task gets a generic section (title and headline
metrics from its run JSON, then its tables), so a new task needs no report code. A builder turns one run
(record + tables) into blocks: ``metrics``, ``table``, ``figure`` (base64 data URI plus the plotted
numbers) and ``text``.

Every run JSON carries its data identity: a subset run puts a banner at the top of the report, and runs
on different images in one report are marked as not comparable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._atomic import atomic_write_json, atomic_write_text
from .._checks import ClipauditError
from .._registry import Registry
from ..provenance import same_images, subset_note
from ..results import read_run

__all__ = ["build_report", "collect_runs", "SECTIONS", "Block", "table_block", "figure_block", "text_block",
           "metrics_block", "run_file", "verdict_block", "glossary_block"]

Block = dict[str, Any]
SectionBuilder = Callable[[dict[str, Any], dict[str, pd.DataFrame], Path], list[Block]]

#: task name -> (section title, order, builder)
SECTIONS: Registry[tuple[str, int, SectionBuilder]] = Registry("report section")


def _cell(v: Any, floatfmt: str = "{:.4f}") -> Any:
    """A table cell for a reader: floats formatted, and never 'nan' or 'inf' (shown as n/a)."""
    if isinstance(v, (float, np.floating)):
        return floatfmt.format(float(v)) if np.isfinite(v) else "n/a"
    if v is None or (not isinstance(v, (str, bytes, list, tuple, dict)) and pd.isna(v) is True):
        return ""
    return v


def table_block(caption: str, df: pd.DataFrame, *, max_rows: int = 200, floatfmt: str = "{:.4f}") -> Block:
    shown = df.head(max_rows)
    rows = [[_cell(v, floatfmt) for v in r] for r in shown.itertuples(index=False)]
    more = f" (first {max_rows} of {len(df)} rows)" if len(df) > max_rows else ""
    return {"kind": "table", "caption": caption + more, "columns": [str(c) for c in df.columns],
            "rows": [[_plain(v) for v in r] for r in rows]}


def figure_block(caption: str, uri: str, data: dict[str, Any] | None = None) -> Block:
    return {"kind": "figure", "caption": caption, "uri": uri, "data": _plain(data or {})}


def text_block(text: str) -> Block:
    return {"kind": "text", "text": text}


def verdict_block(lines: list[str]) -> Block:
    """The answer to the reader's question, shown first and highlighted."""
    return {"kind": "verdict", "lines": list(lines)}


def glossary_block(entries: dict[str, str]) -> Block:
    """Term -> one-line definition."""
    return {"kind": "glossary", "items": sorted(entries.items())}


def metrics_block(metrics: dict[str, Any]) -> Block:
    return {"kind": "metrics", "items": [[k, _fmt(v)] for k, v in metrics.items()]}


def _fmt(v: Any) -> str:
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4f}" if np.isfinite(v) else "n/a"
    return "n/a" if v is None else str(v)


def _plain(v: Any) -> Any:
    """JSON-able copy (numpy scalars/arrays to Python)."""
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def run_file(record: dict[str, Any], path: Path, name: str) -> Path:
    """Where a file a run wrote (``record["files"]`` key, e.g. a figure) is, next to its JSON at ``path``."""
    return path.parent / (record.get("files") or {}).get(name, name)


def _manifest_files(results_dir: Path) -> list[Path] | None:
    manifest = results_dir / "runs.json"
    if not manifest.is_file():
        return None
    try:
        files = json.loads(manifest.read_text())["files"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise ClipauditError(f"{str(manifest)!r} is not a clipaudit run manifest ({err}); delete it to report "
                             "every run file in the folder.") from None
    return [results_dir / f for f in files]


def collect_runs(results_dir: str | Path) -> list[tuple[Path, dict[str, Any], dict[str, pd.DataFrame]]]:
    """The run JSONs of ``results_dir`` with their tables: those its ``runs.json`` lists, else every one."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ClipauditError(f"Results folder {str(results_dir)!r} does not exist.")
    runs = []
    listed = _manifest_files(results_dir)
    for path in listed if listed is not None else sorted(results_dir.rglob("*.json")):
        try:
            head = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(head, dict) or not {"task", "model", "metrics"} <= set(head):
            continue
        record, tables = read_run(path)
        runs.append((path, record, tables))
    if not runs:
        raise ClipauditError(f"No clipaudit run files (JSON with task/model/metrics) under {str(results_dir)!r}.")
    return runs


def _facts(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    identity = record.get("identity") or {}
    info = identity.get("model") or record.get("model_info", {})
    return {
        "task": record["task"], "model": record["model"], "pretrained": record.get("pretrained"),
        "weights_sha256": (info.get("weights_sha256") or "")[:16], "dataset": record.get("dataset"),
        "data": record.get("data") or "", "settings key": identity.get("key", ""),
        "prompt set": record.get("templates"), "created": record.get("created"),
        "seconds": record.get("seconds"), "clipaudit": record.get("clipaudit_version"),
        "torch": (record.get("versions") or {}).get("torch"),
        "open_clip": (record.get("versions") or {}).get("open_clip"), "file": path.name,
    }


def build_report(results_dir: str | Path, out_dir: str | Path | None = None, *, title: str | None = None,
                 extra_facts: dict[str, Any] | None = None) -> Path:
    """Render ``results_dir`` to ``out_dir/index.html`` (+ ``report.json``); return the HTML path."""
    from . import sections  # noqa: F401  (registers the section builders)

    results_dir = Path(results_dir)
    runs = collect_runs(results_dir)
    out_dir = Path(out_dir) if out_dir is not None else Path("reports") / results_dir.resolve().name
    by_task: dict[str, list[tuple[Path, dict[str, Any], dict[str, pd.DataFrame]]]] = {}
    for run in runs:
        by_task.setdefault(run[1]["task"], []).append(run)
    out_sections = []
    for task, task_runs in by_task.items():
        if task in SECTIONS:
            heading, order, builder = SECTIONS.get(task)
        else:
            heading, order, builder = task.replace("_", " "), 99, None
            heading = task_runs[0][1].get("title") or heading
        subsections = []
        for path, record, tables in task_runs:
            blocks = builder(record, tables, path) if builder else generic_section(record, tables, path)
            subsections.append({"title": f"{record['model']} · {record.get('data') or record.get('dataset')}",
                                "blocks": blocks})
        comparison = None
        if len(task_runs) > 1:
            records = [r for _, r, _ in task_runs]
            rows = [{"model": r["model"], "pretrained": r.get("pretrained"), "data": r.get("data") or r.get("dataset"),
                     **{k: v for k, v in r["metrics"].items() if isinstance(v, (int, float))}}
                    for r in records]
            caption = "side by side"
            if not same_images(records):
                caption += (" — NOT COMPARABLE: these runs used different images (see the data column); compare "
                            "numbers only between runs on the same data")
            comparison = table_block(caption, pd.DataFrame(rows))
        out_sections.append({"id": task, "title": heading, "order": order, "comparison": comparison,
                             "runs": subsections})
    out_sections.sort(key=lambda s: (s["order"], s["id"]))
    context = {
        "title": title or f"clipaudit report: {results_dir.resolve().name}",
        "banners": banners([r for _, r, _ in runs]),
        "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
        "results_dir": str(results_dir),
        "facts": [_facts(p, r) for p, r, _ in runs],
        "extra_facts": _plain(extra_facts or {}),
        "sections": out_sections,
    }
    html = render(context)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "report.json", _sidecar(context))
    return atomic_write_text(out_dir / "index.html", html)


def banners(records: list[dict[str, Any]]) -> list[str]:
    """Warnings that belong at the top of the page: subsets, and runs on different images."""
    out = []
    notes = sorted({subset_note(r["identity"]["data"]) for r in records
                    if r.get("identity") and subset_note(r["identity"]["data"])})
    for note in notes:
        out.append(f"SUBSET: these results use a {note}; they are not numbers for the whole dataset.")
    for model in sorted({r["model"] for r in records if (r.get("identity") or {}).get("model", {})
                         .get("trained_on_test_data")}):
        out.append(f"TEST DATA IN TRAINING: model {model} was trained with --allow-test-data on a test split; its "
                   "numbers on that data measure memory, not generalisation.")
    if not same_images(records):
        names = sorted({r.get("data") or r.get("dataset") or "?" for r in records if r.get("identity")})
        out.append("Runs in this report used different images (" + "; ".join(names) + "): numbers from different "
                   "data are not comparable.")
    return out


def generic_section(record: dict[str, Any], tables: dict[str, pd.DataFrame], path: Path) -> list[Block]:
    """Any task without its own builder: headline metrics first, the other metrics, then every table."""
    metrics = record["metrics"]
    head = [k for k in record.get("headline") or [] if k in metrics]
    blocks = [metrics_block({k: metrics[k] for k in head + [k for k in metrics if k not in head]})]
    blocks += [table_block(name.replace("_", " "), df) for name, df in tables.items()]
    return blocks


def _sidecar(context: dict[str, Any]) -> dict[str, Any]:
    def strip(obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "uri"}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    return strip(context)


def render(context: dict[str, Any]) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(loader=PackageLoader("analysis.report", "templates"),
                      autoescape=select_autoescape(["html", "j2"], default_for_string=True, default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.get_template("report.html.j2").render(**context)
