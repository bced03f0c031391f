"""What every reproduction table shares: the run context, our-vs-published merge, Markdown and result files.

A table function takes a :class:`ReproContext` (models loaded once, one :class:`EmbeddingCache`, the data
``root``, the ``limit`` subset, the tables' options) and returns a long DataFrame with one row per number
(:data:`OURS_COLUMNS`). Its numbers come from the task modules on one
:class:`~analysis.tasks._context.TaskContext` per model x dataset x prompt set (:meth:`ReproContext.task_context`):
the image features, the classifier state (name-only and ensemble logits) and what is derived from them are
computed once and shared by every row and table that uses them. :func:`compare` puts the published number
next to each of ours, and :func:`write_result` writes CSV + Markdown + the run JSON the report reads, named by
the run's :class:`~analysis.provenance.RunIdentity` (table, models, datasets and subset, prompt set, options).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import pkgutil
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .._atomic import atomic_write_text
from .._checks import ClipauditError, check_positive_int
from .._registry import Registry
from ..provenance import RunIdentity, data_identity, describe_data, prompt_identity, slug, versions
from .options import DemoOptions, GeOptions, MutualKnowledgeOptions
from .published import KEY, load_published

if TYPE_CHECKING:
    from ..cache import EmbeddingCache
    from ..data import ImageDataset, TemplateSet
    from ..models import ClipModel
    from ..tasks._context import TaskContext

__all__ = [
    "ModelEntry", "ReproContext", "TableSpec", "TABLES", "OURS_COLUMNS", "paper_model_name", "compare",
    "subset_note", "to_markdown", "write_result", "TableResult", "run_table", "get_table", "load_tables",
    "zeroshot_metrics", "table_identity",
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

    @property
    def key(self) -> tuple[str, str | None, str]:
        """What identifies the weights: name, pretrained tag, SHA-256."""
        info = self.model.info
        return str(info.name), info.pretrained, str(info.weights_sha256)


@dataclass
class ReproContext:
    """Everything a table function needs; datasets, task contexts and derived results are memoised in ``memo``.

    Parameters
    ----------
    models : list of ModelEntry
    cache : EmbeddingCache
        One cache for every table and task of the run (the only encoder).
    root : str, optional
        Folder holding the datasets (each loader also tries the usual sub-folder names), as ``--root``.
    limit, seed : int, optional
        Stratified subset of about ``limit`` images per dataset (``create_dataset(..., limit=, seed=)``, as
        every command's ``--limit``); flagged in every output.
    templates : str or TemplateSet, default="openai_imagenet"
        The paper's 80 templates; a smaller set only for tests.
    datasets : list of str, optional
        Restrict multi-dataset tables to these dataset names.
    ge, concepts, demo : options
        The Hierarchy-CLIP tables' method options, the concepts task's options in the mutual-knowledge
        tables, and the demo table's data.
    views : tuple of str
        Image perturbations encoded with the original view in every task context (the union over the tables
        of the run, so one decode pass serves them all; :func:`run_table` adds its table's).
    memo : dict
        Shared by the contexts of one command (several tables reuse datasets, task contexts and results).
    """

    models: list[ModelEntry]
    cache: EmbeddingCache
    root: str | None = None
    limit: int | None = None
    seed: int = 0
    templates: str | TemplateSet = "openai_imagenet"
    datasets: Sequence[str] | None = None
    ge: GeOptions = field(default_factory=GeOptions)
    concepts: MutualKnowledgeOptions = field(default_factory=MutualKnowledgeOptions)
    demo: DemoOptions = field(default_factory=DemoOptions)
    views: tuple[str, ...] = ()
    memo: dict[Any, Any] = field(default_factory=dict)
    sizes: dict[str, tuple[int, int]] = field(default_factory=dict)  # dataset -> (used, full), this table
    missing: dict[str, str] = field(default_factory=dict)  # dataset -> message, this table
    loaded: dict[str, ImageDataset] = field(default_factory=dict)  # dataset -> data set used, this table

    def __post_init__(self) -> None:
        if self.limit is not None:
            check_positive_int("limit", self.limit)
        if not self.models:
            raise ClipauditError("No model given: pass --model (and --pretrained).")

    def wants(self, name: str) -> bool:
        return self.datasets is None or name in self.datasets

    def _dataset_key(self, name: str, root: str | None) -> tuple[Any, ...]:
        return ("dataset", name, root if root is not None else self.root, self.limit, self.seed)

    def dataset(self, name: str, *, root: str | None = None) -> ImageDataset:
        """Load (once) dataset ``name`` from the data root, the ``limit`` subset of it when set."""
        from ..data import create_dataset

        key = self._dataset_key(name, root)
        if key not in self.memo:
            self.memo[key] = create_dataset(name, root=key[2], limit=self.limit, seed=self.seed)
        ds = self.memo[key]
        self.sizes[name] = (len(ds), len(ds.root))
        self.loaded[name] = ds
        return ds

    def try_dataset(self, name: str) -> ImageDataset | None:
        """Like :meth:`dataset`, but a missing dataset is recorded in ``missing`` (and None returned)."""
        from ..data import DATASETS

        key = ("missing", name, self.root)
        if key not in self.memo:
            try:
                return self.dataset(name)
            except ClipauditError as err:
                if name not in DATASETS:
                    raise
                self.memo[key] = str(err)
        self.missing[name] = self.memo[key]
        return None

    def task_context(self, entry: ModelEntry, dataset: str, templates: str | TemplateSet | None = None, *,
                     root: str | None = None) -> TaskContext:
        """The one :class:`~analysis.tasks._context.TaskContext` of ``entry`` x ``dataset`` x prompt set.

        ``templates`` defaults to the run's prompt set. Its classifier state (``.state``) is built on first
        use and shared by every row and table asking for the same model, data and prompt set.
        """
        from ..data import load_templates
        from ..tasks._context import TaskContext

        tset = load_templates(self.templates if templates is None else templates)
        ds = self.dataset(dataset, root=root)
        key = ("task_context", entry.key, self._dataset_key(dataset, root), tset.name, tset.fingerprint(),
               tuple(sorted(set(self.views))))
        if key not in self.memo:
            self.memo[key] = TaskContext(entry.model, ds, self.cache, templates=tset, views=self.views)
        return self.memo[key]

    def derived(self, tc: TaskContext, what: Any, compute: Callable[[], Any]) -> Any:
        """Memoise ``compute()`` for task context ``tc`` (contexts live as long as ``memo``: ids stay unique)."""
        return self.memoise(("derived", id(tc), what), compute)

    @property
    def subset(self) -> bool:
        """True when some dataset was cut to ``limit`` images."""
        return any(used < full for used, full in self.sizes.values())

    def memoise(self, key: Any, compute: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


def zeroshot_metrics(ctx: ReproContext, tc: TaskContext) -> dict[str, Any]:
    """Zero-shot metrics (:func:`analysis.zeroshot.zeroshot_table`) of the ensemble classifier of ``tc``'s state.

    Returns ``acc1``, ``acc5`` (5+ classes), ``mean_per_class_recall``, ``n_images`` and ``templates`` (the
    prompt set's name); computed once per task context.
    """

    def compute() -> dict[str, Any]:
        from ..zeroshot import zeroshot_table

        s = tc.state
        s.check_labelled("Zero-shot classification")
        _, metrics, _ = zeroshot_table(s.features, s.labels, s.weights, scale=s.scale, bias=s.bias)
        return {**metrics, "n_images": int(len(s.index)), "templates": s.templates}

    return ctx.derived(tc, "zeroshot", compute)


TableFunction = Callable[[ReproContext], pd.DataFrame]


@dataclass(frozen=True)
class TableSpec:
    """A reproducible table: its function, title, citation and the models it is about by default.

    ``views`` are the image perturbations its numbers need besides the original image (encoded in the same
    decode pass); ``options`` names the :class:`ReproContext` option groups its numbers depend on (``"ge"``,
    ``"concepts"``, ``"demo"``), which go into its run identity.
    """

    name: str
    title: str
    paper: str
    function: TableFunction
    default_models: tuple[tuple[str, str | None], ...]
    datasets: tuple[str, ...]
    notes: str = ""
    views: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


TABLES: Registry[TableSpec] = Registry("reproduction table")
_NOT_TABLES = {"core", "options", "published"}
_loaded = False


def load_tables() -> Registry[TableSpec]:
    """The registry with every table module of this package imported (each registers its tables)."""
    global _loaded
    if not _loaded:
        _loaded = True
        package = __name__.rsplit(".", 1)[0]
        for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
            if not info.name.startswith("_") and info.name not in _NOT_TABLES:
                importlib.import_module(f"{package}.{info.name}")
    return TABLES


def get_table(name: str) -> TableSpec:
    """The registered table ``name`` (an unknown name raises with the known ones and a close match)."""
    return load_tables().get(name)


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
    """A finished table: the comparison, what it ran on and its run identity."""

    spec: TableSpec
    comparison: pd.DataFrame
    subset: bool
    subset_note: str
    missing: dict[str, str]
    limit: int | None
    identity: RunIdentity | None = None


def to_markdown(result: TableResult) -> str:
    """Markdown: title, subset/full statement, missing datasets, the side-by-side table, sources, provenance."""
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
    if result.identity is not None:
        lines += ["", "Provenance:"] + [f"- {line}" for line in provenance_lines(result.identity)]
    return "\n".join(lines) + "\n"


def provenance_lines(identity: RunIdentity | dict[str, Any]) -> list[str]:
    """Plain lines naming the models (weights hash), data (subset), prompt set and settings key of a table run."""
    ident = identity.as_dict() if isinstance(identity, RunIdentity) else identity
    model = ident["model"]
    lines = []
    for m in model.get("models", [model]):
        lines.append(f"model {m.get('name')} ({m.get('pretrained') or 'no weights'}), weights SHA-256 "
                     f"{str(m.get('weights_sha256') or '')[:16]}")
    for d in (ident["data"].get("datasets") or {}).values():
        lines.append(f"data {describe_data(d)}, fingerprint {str(d.get('fingerprint'))[:16]}")
    if ident.get("prompts"):
        p = ident["prompts"]
        lines.append(f"prompt set {p['name']} ({p['n_templates']} templates, SHA-256 {str(p['sha256'])[:16]})")
    lines.append(f"settings key {ident.get('key', '?')}, embeddings stored as {ident.get('embedding_dtype')}")
    return lines


def _models_identity(models: Sequence[ModelEntry]) -> dict[str, Any]:
    infos = [{**e.model.info.as_dict(), "paper_model": e.paper_name} for e in models]
    if len(infos) == 1:
        return infos[0]
    return {"name": "+".join(str(i["name"]) for i in infos),
            "pretrained": "+".join(str(i["pretrained"] or "none") for i in infos), "models": infos}


def _tables_data_identity(datasets: dict[str, ImageDataset], limit: int | None, seed: int) -> dict[str, Any]:
    """One data identity for every dataset a table used (``datasets``: name -> data set, with subset info)."""
    ids = {name: data_identity(ds) for name, ds in datasets.items()}
    if len(ids) == 1:
        (only,) = ids.values()
        return {**only, "datasets": ids}
    subsets = [d["subset"] for d in ids.values() if d["subset"]]
    subset = None
    if subsets:
        subset = {"kind": "stratified per dataset", "limit": limit, "seed": seed,
                  "n": sum(d["n_images"] for d in ids.values()),
                  "of": sum(d["subset"]["of"] if d["subset"] else d["n_images"] for d in ids.values())}
    prints = json.dumps(sorted((n, d["fingerprint"]) for n, d in ids.items()))
    return {"name": "+".join(ids) or "none", "split": "+".join(dict.fromkeys(d["split"] for d in ids.values())),
            "fingerprint": hashlib.sha256(prints.encode()).hexdigest(),
            "n_images": sum(d["n_images"] for d in ids.values()),
            "n_classes": max((d["n_classes"] for d in ids.values()), default=0), "subset": subset, "datasets": ids}


def table_identity(spec: TableSpec, ctx: ReproContext) -> RunIdentity:
    """The run identity of table ``spec`` as just run on ``ctx``: its models, the datasets it used (with their
    subsets), the prompt set, the option groups it reads, the embedding dtype and the library versions."""
    from ..data import load_templates
    from ..tasks._options import to_dict

    options: dict[str, Any] = {"table": spec.name}
    for group in spec.options:
        options[group] = to_dict(getattr(ctx, group))
    return RunIdentity(task=f"reproduce:{spec.name}", model=_models_identity(ctx.models),
                       data=_tables_data_identity(dict(ctx.loaded), ctx.limit, ctx.seed),
                       prompts=prompt_identity(load_templates(ctx.templates)), options=options,
                       embedding_dtype=str(getattr(ctx.cache, "dtype", "float16")), versions=versions())


def run_table(name: str, ctx: ReproContext) -> TableResult:
    """Run table ``name`` and merge the published numbers.

    The table's image views join ``ctx.views``; the datasets used, sizes and missing datasets are this
    table's (reset first), and so is the returned :attr:`TableResult.identity`.
    """
    spec = get_table(name)
    ctx.views = tuple(dict.fromkeys([*ctx.views, *spec.views]))
    ctx.sizes.clear()
    ctx.missing.clear()
    ctx.loaded.clear()
    ours = spec.function(ctx)
    comparison = compare(ours, spec.name)
    return TableResult(spec, comparison, ctx.subset, subset_note(ctx), dict(ctx.missing), ctx.limit,
                       table_identity(spec, ctx))


def result_stem(result: TableResult) -> str:
    """File stem: ``<table>__<datasets>[-subset<N>]__<models>__<weights>__<settings key>`` (no identity: the
    table and its models, as before identities existed)."""
    from ..results import run_stem

    if result.identity is None:
        models = sorted({m for m in result.comparison["model"] if m != "(not run)"})
        return run_stem("reproduce", result.spec.name, ",".join(models) or "none", None)
    return f"{slug(result.spec.name)}__{result.identity.stem()}"


def write_result(result: TableResult, results_dir: str | Path) -> tuple[Path, Path]:
    """Write ``results_dir/reproduce/<stem>.{json,md}`` and the comparison as CSV + Parquet.

    The stem (:func:`result_stem`) follows the run identity, so runs with other models, datasets, subsets,
    prompt sets or options never overwrite each other. Returns the run JSON and Markdown paths.
    """
    from ..results import write_run

    df = result.comparison
    models = sorted({m for m in df["model"] if m != "(not run)"})
    model = ",".join(models) or "none"
    stem = result_stem(result)
    metrics = {
        "n_numbers": int(df["ours"].notna().sum()),
        "n_published": int(df["published"].notna().sum()),
        "n_compared": int((df["ours"].notna() & df["published"].notna()).sum()),
        "mean_abs_diff": float(df["diff"].abs().mean()) if df["diff"].notna().any() else float("nan"),
        "subset": result.subset,
    }
    extra: dict[str, Any] = {
        "table": result.spec.name, "title": result.spec.title, "paper": result.spec.paper,
        "subset": result.subset, "subset_note": result.subset_note, "limit": result.limit,
        "missing_datasets": result.missing, "markdown": f"{stem}.md"}
    if result.identity is not None:
        ident = result.identity
        extra.update({"identity": ident.as_dict(), "versions": ident.versions, "data": describe_data(ident.data),
                      "templates": (ident.prompts or {}).get("name"), "options": ident.options,
                      "provenance": provenance_lines(ident)})
    path = write_run(results_dir, task="reproduce", dataset=result.spec.name, model=model, pretrained=None,
                     metrics=metrics, tables={"comparison": df}, extra=extra, stem=stem)
    md = atomic_write_text(path.parent / f"{stem}.md", to_markdown(result))
    return path, md
