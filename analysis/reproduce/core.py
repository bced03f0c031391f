"""What every reproduction table shares: the run context, our-vs-published merge, Markdown and result files.

A table function takes a :class:`ReproContext` (models loaded once, one :class:`EmbeddingCache`, the data
root, ``limit``) and returns a long DataFrame with one row per number (:data:`OURS_COLUMNS`);
:func:`compare` puts the published number next to each, and :func:`write_result` writes CSV + Markdown
+ the run JSON the report reads.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._atomic import atomic_write_text
from .._checks import ClipauditError, check_positive_int
from .._registry import Registry
from ..cache import EmbeddingCache
from ..data import DATASETS, ImageDataset, TemplateSet, create_dataset
from ..models import ClipModel
from .published import KEY, load_published

__all__ = [
    "ModelEntry", "ReproContext", "TableSpec", "TABLES", "OURS_COLUMNS", "paper_model_name", "compare",
    "subset_note", "to_markdown", "write_result", "TableResult", "run_table",
]

#: Columns a table function returns.
OURS_COLUMNS = ("table", "model", "paper_model", "dataset", "row", "column", "ours", "unit", "n_images", "notes")


def paper_model_name(name: str, pretrained: str | None) -> str:
    """The paper's backbone name for an open_clip model: ("ViT-B-16", "openai") -> "ViT-B/16".

    OpenAI weights map to the bare name ("RN50", "ViT-L/14@336"), DFN weights get "-dfn" ("ViT-B/16-dfn");
    anything else keeps its tag in brackets, so it never matches a published row by accident.
    """
    arch = Path(str(name)).name if "/" in str(name) or "\\" in str(name) else str(name)
    arch = re.sub(r"^(ViT-[A-Za-z]+)-(\d+)", r"\1/\2", arch)
    arch = re.sub(r"-(\d{3})(-quickgelu)?$", r"@\1", arch)
    arch = arch.replace("-quickgelu", "")
    tag = (pretrained or "").lower()
    if tag == "openai":
        return arch
    if "dfn" in tag:
        return f"{arch}-dfn"
    return f"{arch} ({pretrained or 'no weights'})"


@dataclass
class ModelEntry:
    """A loaded model and the paper name its rows are compared under."""

    model: ClipModel
    paper_name: str

    @property
    def name(self) -> str:
        return str(self.model.info.name)


@dataclass
class ReproContext:
    """Everything a table function needs; datasets and intermediate results are memoised in ``memo``.

    Parameters
    ----------
    models : list of ModelEntry
    cache : EmbeddingCache
        One cache for every table and pipeline of the run.
    data_root : str, optional
        Folder holding the datasets (each loader also tries the usual sub-folder names).
    limit : int, optional
        Stratified subset of about ``limit`` images per dataset (quick check; flagged in every output).
    templates : str or TemplateSet, default="openai_imagenet"
        The paper's 80 templates; a smaller set only for tests.
    datasets : list of str, optional
        Restrict multi-dataset tables to these dataset names.
    options : dict
        Table-specific options (``hierarchy``: HierarchyOptions kwargs, ``descriptors``,
        ``concept_classes``, ``images_per_class``, ``demo_dataset``...).
    """

    models: list[ModelEntry]
    cache: EmbeddingCache
    data_root: str | None = None
    limit: int | None = None
    seed: int = 0
    templates: str | TemplateSet = "openai_imagenet"
    datasets: Sequence[str] | None = None
    options: dict[str, Any] = field(default_factory=dict)
    memo: dict[Any, Any] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # dataset -> (used, full)
    missing: dict[str, str] = field(default_factory=dict)  # dataset -> message

    def __post_init__(self) -> None:
        if self.limit is not None:
            check_positive_int("limit", self.limit)
        if not self.models:
            raise ClipauditError("No model given: pass --model (and --pretrained).")

    def wants(self, name: str) -> bool:
        return self.datasets is None or name in self.datasets

    def dataset(self, name: str, *, root: str | None = None) -> ImageDataset:
        """Load (once) dataset ``name`` from the data root, limited to ``limit`` images when set."""
        key = ("dataset", name, self.limit, self.seed)
        if key not in self.memo:
            where = root if root is not None else self.data_root
            full = create_dataset(name, root=where)
            ds = full
            if self.limit is not None and self.limit < len(full):
                ds = create_dataset(name, root=where, limit=self.limit, seed=self.seed)
            self.memo[key] = (ds, len(ds), len(full))
        ds, used, full_n = self.memo[key]
        self.sizes[name] = (used, full_n)
        return ds

    def try_dataset(self, name: str) -> ImageDataset | None:
        """Like :meth:`dataset`, but a missing dataset is recorded in ``missing`` (and None returned)."""
        key = ("missing", name)
        if key not in self.memo:
            try:
                return self.dataset(name)
            except ClipauditError as err:
                if name not in DATASETS:
                    raise
                self.memo[key] = str(err)
        self.missing[name] = self.memo[key]
        return None

    @property
    def subset(self) -> bool:
        """True when some dataset was cut to ``limit`` images."""
        return any(used < full for used, full in self.sizes.values())

    def memoise(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


TableFunction = Callable[[ReproContext], pd.DataFrame]


@dataclass(frozen=True)
class TableSpec:
    """A reproducible table: its function, title, citation and the models it is about by default."""

    name: str
    title: str
    paper: str
    function: TableFunction
    default_models: tuple[tuple[str, str | None], ...]
    datasets: tuple[str, ...]
    notes: str = ""


TABLES: Registry[TableSpec] = Registry("reproduction table")


def row(table: str, entry: ModelEntry, dataset: str, row_: str, column: str, ours: float, unit: str,
        n_images: int, notes: str = "") -> dict[str, Any]:
    """One number of ours (helper for table functions)."""
    return {"table": table, "model": entry.name, "paper_model": entry.paper_name, "dataset": dataset,
            "row": str(row_), "column": column, "ours": float(ours), "unit": unit, "n_images": int(n_images),
            "notes": notes}


def compare(ours: pd.DataFrame, table: str, *, published: pd.DataFrame | None = None) -> pd.DataFrame:
    """Our numbers next to the paper's: adds ``published``, ``diff`` (ours - published) and ``source``.

    Rows are matched on (table, paper model, dataset, row, column). Published numbers with no match (a
    model or dataset not run) are appended with ``ours`` empty, so the output shows the whole paper table.
    """
    pub = load_published(table) if published is None else published[published["table"] == table]
    pub = pub[pub["value"].notna()]
    left = ours.copy() if len(ours) else pd.DataFrame(columns=list(OURS_COLUMNS))
    right = pub.rename(columns={"model": "paper_model", "value": "published", "notes": "published_notes"})
    keys = [k if k != "model" else "paper_model" for k in KEY]
    right = right[keys + ["published", "paper", "paper_table", "source", "published_notes", "unit"]].rename(
        columns={"unit": "published_unit"})
    merged = left.merge(right, on=keys, how="left")  # keeps our order
    done = set(map(tuple, merged[keys].astype(str).to_numpy().tolist()))
    rest = right[[tuple(k) not in done for k in right[keys].astype(str).to_numpy().tolist()]]
    merged = pd.concat([merged, rest.assign(model="(not run)")], ignore_index=True)
    merged["unit"] = merged["unit"].fillna(merged["published_unit"])
    merged["ours"] = pd.to_numeric(merged["ours"])
    merged["diff"] = merged["ours"] - merged["published"]
    merged["notes"] = merged["notes"].fillna("")
    merged["published_notes"] = merged["published_notes"].fillna("")
    cols = ["table", "model", "paper_model", "dataset", "row", "column", "ours", "published", "diff", "unit",
            "n_images", "notes", "paper", "paper_table", "source", "published_notes"]
    return merged[cols].reset_index(drop=True)


def subset_note(ctx: ReproContext) -> str:
    """One plain sentence: full data, or which datasets ran on how many images."""
    if ctx.subset:
        parts = ", ".join(f"{n} {u:,} of {f:,} images" for n, (u, f) in ctx.sizes.items() if u < f)
        return (f"RAN ON A SUBSET (--limit {ctx.limit}): {parts}. These numbers are a quick check, not "
                f"comparable to the paper's full-set numbers.")
    if ctx.sizes:
        return "Ran on the full datasets: " + ", ".join(f"{n} {u:,} images" for n, (u, _) in ctx.sizes.items()) + "."
    return "No dataset was loaded."


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.2f}" if abs(v) >= 1 or v == 0 else f"{v:.3f}"
    return str(v).replace("|", "\\|")


@dataclass
class TableResult:
    """A finished table: the comparison and what it ran on."""

    spec: TableSpec
    comparison: pd.DataFrame
    subset: bool
    subset_note: str
    missing: dict[str, str]
    limit: int | None


def to_markdown(result: TableResult) -> str:
    """Markdown: title, subset/full statement, missing datasets, the side-by-side table, sources."""
    spec, df = result.spec, result.comparison
    lines = [f"# {spec.title}", "", f"Paper: {spec.paper}", "", f"**{result.subset_note}**"
             if result.subset else result.subset_note, ""]
    for name, msg in result.missing.items():
        lines.append(f"- dataset `{name}` not run: {msg}")
    if result.missing:
        lines.append("")
    cols = ["model", "paper_model", "dataset", "row", "column", "ours", "published", "diff", "unit", "n_images"]
    lines.append("| " + " | ".join(cols) + " |")
    lines.append("|" + "---|" * len(cols))
    for r in df[cols].itertuples(index=False):
        lines.append("| " + " | ".join(_fmt(v) for v in r) + " |")
    notes = sorted({n for n in df["notes"] if n} | {n for n in df["published_notes"] if n})
    if notes:
        lines += ["", "Notes:"] + [f"- {n}" for n in notes]
    sources = sorted({f"{p} {t} (transcribed from {s})" for p, t, s in
                      df[["paper", "paper_table", "source"]].dropna().itertuples(index=False)})
    if sources:
        lines += ["", "Published numbers:"] + [f"- {s}" for s in sources]
    if spec.notes:
        lines += ["", spec.notes]
    return "\n".join(lines) + "\n"


def run_table(name: str, ctx: ReproContext) -> TableResult:
    """Run table ``name`` and merge the published numbers."""
    spec = TABLES.get(name)
    ours = spec.function(ctx)
    comparison = compare(ours, spec.name)
    return TableResult(spec, comparison, ctx.subset, subset_note(ctx), dict(ctx.missing), ctx.limit)


def write_result(result: TableResult, results_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results_dir/reproduce/<table>__<models>__none.{json,md}`` and the comparison as CSV + Parquet.

    Returns the run JSON and Markdown paths.
    """
    from ..results import run_stem, write_run

    df = result.comparison
    models = sorted({m for m in df["model"] if m != "(not run)"})
    model = ",".join(models) or "none"
    stem = run_stem("reproduce", result.spec.name, model, None)
    metrics = {
        "n_numbers": int(df["ours"].notna().sum()),
        "n_published": int(df["published"].notna().sum()),
        "n_compared": int((df["ours"].notna() & df["published"].notna()).sum()),
        "mean_abs_diff": float(df["diff"].abs().mean()) if df["diff"].notna().any() else float("nan"),
        "subset": result.subset,
    }
    path = write_run(
        results_dir, task="reproduce", dataset=result.spec.name, model=model, pretrained=None,
        metrics=metrics, tables={"comparison": df},
        extra={"table": result.spec.name, "title": result.spec.title, "paper": result.spec.paper,
               "subset": result.subset, "subset_note": result.subset_note, "limit": result.limit,
               "missing_datasets": result.missing, "markdown": f"{stem}.md"},
    )
    md = atomic_write_text(path.parent / f"{stem}.md", to_markdown(result))
    return path, md
