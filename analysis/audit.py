"""The main job: every pipeline on one embedding cache, one results folder, one report.

:func:`run_audit` loads each model once and runs, in order (each stage can be switched off):

1. ``zeroshot``: prompt-ensemble zero-shot accuracy (:func:`analysis.zeroshot.run_zeroshot`);
2. ``confidence``: self-consistency confidence and the deployment thresholds
   (:func:`analysis.confidence.run_confidence`, :func:`analysis.confidence.confidence_summary`);
3. ``hierarchy``: WordNet reranking of the low-confidence set, taken from the confidence stage's table
   (:func:`analysis.hierarchy.rerank_dataset`), with thumbnails of fixed and broken predictions;
4. ``concepts``: mutual-knowledge concepts on a sample of classes (:func:`analysis.concepts.run_concepts`),
   with one PNG figure per class;
5. ``retrieval``: recall@k when the dataset has captions (:func:`analysis.retrieval.run_retrieval`).

Everything goes to ``<results_dir>/audit/<name>/`` (run JSONs and tables per task, ``config.json`` with
the effective configuration, an ``audit`` run per model with the stage table and timings) and the report
to ``<reports_dir>/<name>/index.html``. A stage that fails is recorded (status, error) and the others
still run. Options are :class:`AuditConfig`, loadable from TOML (:func:`load_config`).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
import platform
import time
import traceback
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._atomic import atomic_write_bytes, atomic_write_json
from ._checks import ClipauditError, check_choice, close_matches
from ._io import read_user_json, read_user_text
from .results import _slug, run_stem, write_run

__all__ = [
    "STAGES", "AuditConfig", "ModelSpec", "ZeroShotStage", "ConfidenceStage", "HierarchyStage", "ConceptsStage",
    "RetrievalStage", "StageRecord", "AuditResult", "load_config", "config_from_dict", "config_to_dict",
    "run_audit", "versions", "format_summary", "hierarchy_examples",
]

log = logging.getLogger(__name__)

#: Stages in run order.
STAGES = ("zeroshot", "confidence", "hierarchy", "concepts", "retrieval")


# ----------------------------------------------------------------------------------------------- config
@dataclass
class ModelSpec:
    """A model to audit: a name understood by :func:`analysis.models.load_model` and its weights."""

    name: str = "clipaudit-lit"
    pretrained: str | None = None


@dataclass
class ZeroShotStage:
    """Prompt-ensemble zero-shot classification (prompt set: :attr:`AuditConfig.templates`)."""

    enabled: bool = True


@dataclass
class ConfidenceStage:
    """Self-consistency confidence (see ``clipaudit confidence --help``)."""

    enabled: bool = True
    perturbations: list[str] = field(default_factory=lambda: ["hflip"])
    splits: list[Any] | None = None  # fractions [0.5, 0.5] or index lists [[0, 1], [2, 3]]
    st_templates: list[int] | None = None
    target_accuracy: float | None = 0.95
    max_risk: float | None = None
    n_boot: int = 1000
    ci: float = 0.95
    seed: int = 0
    low_threshold: float | None = None
    low_size: int | None = None


@dataclass
class HierarchyStage:
    """WordNet hierarchy reranking (see ``clipaudit hierarchy --help``)."""

    enabled: bool = True
    set: str = "low-confidence"  # or "all"
    variant: str = "name-only"
    candidates: str = "name-only"
    top_k: int = 5
    max_children: int | None = None
    parent_policy: str = "first"
    parent_words: str = "first-lemma"
    keep_fraction: float = 0.4
    prune_templates: str | None = None
    keep_abstract: bool = False
    keep_pruned_children: bool = False
    class_map: str = "auto"
    overrides: str | None = None
    ambiguous: str = "first"
    examples: int = 6  # fixed and broken predictions shown with thumbnails (each)
    thumbnail_size: int = 64


@dataclass
class ConceptsStage:
    """Mutual-knowledge concepts on a sample of classes (see ``clipaudit concepts --help``)."""

    enabled: bool = True
    classes: list[str] | None = None  # default: the n_classes most often low-confidence classes
    n_classes: int = 2
    images_per_class: int = 8
    descriptors: str = "auto"  # a pool whose name is in the dataset's name, else the stage is skipped
    foreground: str = "svd"
    crf: bool = True
    mi: str = "released"
    parts: int = 5
    seed: int = 0
    figure_images: int = 3


@dataclass
class RetrievalStage:
    """Image-text retrieval recall@k; runs only when the dataset has captions."""

    enabled: bool = True
    k: list[int] = field(default_factory=lambda: [1, 5, 10])


@dataclass
class AuditConfig:
    """Every option of an audit. Defaults: ``clipaudit-lit`` on the bundled subset, every stage on.

    TOML layout (any key may be left out)::

        name = "my-audit"            # run folder name (default: <model>[+<model>...]_<dataset>)
        dataset = "bundled"          # a name, a class-folder path or a manifest
        limit = 200
        templates = "openai_imagenet"
        [[models]]
        name = "clipaudit-tiny-rn"
        [confidence]
        target_accuracy = 0.9
        [concepts]
        enabled = false
    """

    models: list[ModelSpec] = field(default_factory=lambda: [ModelSpec()])
    name: str | None = None
    dataset: str | None = None
    root: str | None = None
    split: str = "test"
    classnames: str | None = None
    limit: int | None = None
    templates: str = "openai_imagenet"
    device: str = "auto"
    results_dir: str = "results"
    reports_dir: str = "reports"
    report: bool = True
    cache_dir: str | None = None
    no_cache: bool = False
    cache_dtype: str = "float16"
    batch_size: int = 64
    quiet: bool = False
    zeroshot: ZeroShotStage = field(default_factory=ZeroShotStage)
    confidence: ConfidenceStage = field(default_factory=ConfidenceStage)
    hierarchy: HierarchyStage = field(default_factory=HierarchyStage)
    concepts: ConceptsStage = field(default_factory=ConceptsStage)
    retrieval: RetrievalStage = field(default_factory=RetrievalStage)

    def run_name(self, dataset_name: str | None = None) -> str:
        if self.name:
            return _slug(self.name)
        models = "+".join(_slug(m.name) + (f"-{_slug(m.pretrained)}" if m.pretrained else "") for m in self.models)
        return f"{models}_{_slug(dataset_name or self.dataset or 'bundled')}"[:120]


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (inner,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, inner) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ClipauditError(f"{where or 'config'} must be a table of options, got {data!r}.")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            near = close_matches(key, names)
            raise ClipauditError(f"Unknown config option {path!r}. Accepted here: {', '.join(names)}."
                                 + (f" Did you mean {', '.join(map(repr, near))}?" if near else ""))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value, path)
        elif key == "models" and cls is AuditConfig:
            if not isinstance(value, list) or not value:
                raise ClipauditError(f"config option 'models' must be a non-empty list of tables "
                                     f"([[models]] name = ...), got {value!r}.")
            kwargs[key] = [_from_dict(ModelSpec, v, f"models[{i}]") for i, v in enumerate(value)]
        else:
            if not _type_ok(value, hint):
                raise ClipauditError(f"config option {path!r} must be {_type_name(hint)}, got {value!r}.")
            kwargs[key] = float(value) if hint is float else value
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any]) -> AuditConfig:
    """Build an :class:`AuditConfig` from nested dicts (as read from TOML or the saved JSON); validate it."""
    config = _from_dict(AuditConfig, data, "")
    _validate(config)
    return config


def config_to_dict(config: AuditConfig) -> dict[str, Any]:
    """Nested plain dict of ``config`` (None kept; TOML has no null, so omit those keys when writing TOML)."""
    return dataclasses.asdict(config)


def load_config(path: str | os.PathLike[str]) -> AuditConfig:
    """Read a ``.toml`` config (``tomllib``) or a saved ``config.json``."""
    path = Path(path)
    text = read_user_text(path, "Config file")
    if path.suffix == ".json":
        data = read_user_json(path, "Config file", text)
    else:
        import tomllib

        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ClipauditError(f"Config file {str(path)!r} is not valid TOML: {err}.") from None
    return config_from_dict(data)


def _validate(config: AuditConfig) -> None:
    from .hierarchy import CANDIDATES, CLASS_MAPS, PARENT_POLICIES, PARENT_WORDS, VARIANTS

    seen = set()
    for m in config.models:
        key = (m.name, m.pretrained)
        if key in seen:
            raise ClipauditError(f"Model {m.name!r} (pretrained {m.pretrained!r}) is listed twice.")
        seen.add(key)
    check_choice("cache_dtype", config.cache_dtype, ["float16", "float32"])
    h = config.hierarchy
    check_choice("hierarchy.set", h.set, ["low-confidence", "all"])
    check_choice("hierarchy.variant", h.variant, VARIANTS)
    check_choice("hierarchy.candidates", h.candidates, CANDIDATES)
    check_choice("hierarchy.class_map", h.class_map, CLASS_MAPS)
    check_choice("hierarchy.parent_policy", h.parent_policy, PARENT_POLICIES)
    check_choice("hierarchy.parent_words", h.parent_words, PARENT_WORDS)
    check_choice("hierarchy.ambiguous", h.ambiguous, ["first", "skip"])
    check_choice("concepts.foreground", config.concepts.foreground, ["svd", "pca"])
    check_choice("concepts.mi", config.concepts.mi, ["released", "textbook"])
    if config.confidence.target_accuracy is not None and config.confidence.max_risk is not None:
        raise ClipauditError("confidence: give target_accuracy or max_risk, not both.")
    if config.confidence.low_threshold is not None and config.confidence.low_size is not None:
        raise ClipauditError("confidence: give low_threshold or low_size, not both.")
    for name in ("batch_size",):
        if getattr(config, name) < 1:
            raise ClipauditError(f"{name} must be >= 1, got {getattr(config, name)}.")
    for name, value in (("concepts.n_classes", config.concepts.n_classes),
                        ("concepts.images_per_class", config.concepts.images_per_class),
                        ("hierarchy.top_k", h.top_k), ("hierarchy.thumbnail_size", h.thumbnail_size)):
        if value < 1:
            raise ClipauditError(f"{name} must be >= 1, got {value}.")


# ----------------------------------------------------------------------------------------------- records
@dataclass
class StageRecord:
    """Outcome of one stage for one model."""

    model: str
    stage: str
    status: str  # "ok", "skipped", "failed", "off"
    seconds: float = 0.0
    message: str = ""
    path: str | None = None  # run JSON, relative to the audit folder
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class AuditResult:
    """What :func:`run_audit` made. ``os.fspath(result)`` is the results folder."""

    results_dir: Path
    report: Path | None
    config: AuditConfig
    stages: list[StageRecord]
    seconds: float
    cache_stats: dict[str, int]
    report_error: str | None = None

    def __fspath__(self) -> str:
        return str(self.results_dir)

    @property
    def ok(self) -> bool:
        return self.report_error is None and all(s.status in ("ok", "skipped", "off") for s in self.stages)


def versions() -> dict[str, str]:
    """Versions of clipaudit and the libraries that change numbers."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    out = {"clipaudit": __version__, "python": platform.python_version()}
    for dist, key in (("torch", "torch"), ("open_clip_torch", "open_clip"), ("numpy", "numpy"),
                      ("scikit-learn", "scikit-learn"), ("pot", "pot"), ("nltk", "nltk")):
        try:
            out[key] = version(dist)
        except PackageNotFoundError:
            out[key] = "not installed"
    return out


class _StageSkipped(Exception):  # noqa: N818 - control flow, not an error
    """Raised inside a stage to record it as skipped (with the reason) rather than failed."""


# ----------------------------------------------------------------------------------------------- stages
class _Context:
    def __init__(self, config: AuditConfig, out: Path, model: Any, dataset: Any, cache: Any,
                 extra: dict[str, Any]) -> None:
        self.config, self.out, self.model, self.dataset, self.cache = config, out, model, dataset, cache
        self.extra = extra  # common run facts
        self.zeroshot: Any = None
        self.confidence_table: pd.DataFrame | None = None
        self.confidence_tables: dict[str, pd.DataFrame] = {}

    def write(self, task: str, metrics: dict[str, Any], tables: dict[str, pd.DataFrame],
              extra: dict[str, Any]) -> Path:
        info = self.model.info
        return write_run(self.out, task=task, dataset=self.dataset.name, model=info.name,
                         pretrained=info.pretrained, metrics=metrics, tables=tables,
                         extra={**self.extra, **extra})

    def stem(self) -> str:
        return run_stem("", self.dataset.name, self.model.info.name, self.model.info.pretrained)


def _stage_zeroshot(ctx: _Context) -> tuple[Path, dict[str, Any]]:
    from .zeroshot import run_zeroshot

    result = run_zeroshot(ctx.model, ctx.dataset, ctx.cache, templates=ctx.config.templates)
    ctx.zeroshot = result
    path = ctx.write("zeroshot_classification", result.metrics, {"predictions": result.predictions},
                     {"classnames": list(ctx.dataset.classnames), "skipped": result.skipped, **result.info})
    return path, result.metrics


def _stage_confidence(ctx: _Context) -> tuple[Path, dict[str, Any]]:
    from .confidence import SCORES, confidence_summary, run_confidence

    o = ctx.config.confidence
    result = run_confidence(ctx.model, ctx.dataset, ctx.cache, templates=ctx.config.templates,
                            perturbations=o.perturbations, splits=o.splits, st_templates=o.st_templates)
    target = None if o.max_risk is not None else o.target_accuracy
    metrics, tables = confidence_summary(result.table, target_accuracy=target, max_risk=o.max_risk,
                                         n_boot=o.n_boot, seed=o.seed, confidence_level=o.ci,
                                         low_threshold=o.low_threshold, low_size=o.low_size)
    metrics["n_skipped"] = len(result.skipped)
    ctx.confidence_table, ctx.confidence_tables = result.table, tables
    path = ctx.write("confidence", metrics, {"per_sample": result.table, **tables}, {
        "classnames": list(ctx.dataset.classnames), "skipped": result.skipped, **result.info,
        "labelled_prediction": {name: pred for name, (pred, _) in SCORES.items()},
        "bootstrap": {"n_boot": o.n_boot, "seed": o.seed, "confidence_level": o.ci},
    })
    return path, metrics


def _thumbnail(image: Any, size: int) -> bytes:
    from PIL import Image

    im = image.convert("RGB")
    scale = size / max(im.size)
    resample = Image.NEAREST if scale > 1 else Image.BICUBIC  # small images stay crisp when enlarged
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def hierarchy_examples(predictions: pd.DataFrame, n: int) -> pd.DataFrame:
    """The first ``n`` fixed (wrong -> right) and ``n`` broken (right -> wrong) predictions.

    ``predictions`` has ``index``, ``label``, ``pred_before``, ``pred_after`` (as
    :func:`analysis.hierarchy.run_hierarchy` returns); rows keep the table's order.
    """
    p = predictions[predictions["label"] >= 0]
    fixed = p[(p["pred_before"] != p["label"]) & (p["pred_after"] == p["label"])].head(n)
    broken = p[(p["pred_before"] == p["label"]) & (p["pred_after"] != p["label"])].head(n)
    return pd.concat([fixed.assign(kind="fixed"), broken.assign(kind="broken")], ignore_index=True)


def _stage_hierarchy(ctx: _Context) -> tuple[Path, dict[str, Any]]:
    from .data.wordnet import load_wordnet
    from .hierarchy import HierarchyOptions, rerank_dataset

    o = ctx.config.hierarchy
    try:
        wn = load_wordnet()
    except ClipauditError as err:
        raise _StageSkipped(f"WordNet is not available: {err}") from None
    low, note = None, "every image reranked (set = all)"
    if o.set == "low-confidence":
        if ctx.confidence_table is not None:
            low, note = ctx.confidence_table, "low-confidence set O from the confidence stage"
        else:  # confidence stage off or failed: only its per-image table is needed (no bootstrap)
            from .confidence import run_confidence

            low = run_confidence(ctx.model, ctx.dataset, ctx.cache, templates=ctx.config.templates,
                                 perturbations=ctx.config.confidence.perturbations,
                                 splits=ctx.config.confidence.splits).table
            note = "low-confidence set O computed here (the confidence stage did not run)"
    options = HierarchyOptions(top_k=o.top_k, max_children=o.max_children, parent_policy=o.parent_policy,
                               parent_words=o.parent_words, drop_abstract=not o.keep_abstract,
                               keep_fraction=None if o.keep_fraction >= 1 else o.keep_fraction,
                               prune_children=not o.keep_pruned_children)
    run = rerank_dataset(ctx.model, ctx.dataset, ctx.cache, templates=ctx.config.templates, options=options,
                         variant=o.variant, candidates=o.candidates, low_confidence=low,
                         prune_templates=o.prune_templates, class_map=o.class_map, overrides=o.overrides,
                         ambiguous=o.ambiguous, wordnet=wn)
    names = list(ctx.dataset.classnames)
    examples = hierarchy_examples(run.result.predictions, o.examples)
    thumbs_rel = f"{ctx.stem()}.thumbs"
    rows = []
    for r in examples.to_dict("records"):
        i = int(r["index"])
        rel = f"{thumbs_rel}/{r['kind']}_{i}.png"
        try:
            atomic_write_bytes(ctx.out / "hierarchy_rerank" / rel, _thumbnail(ctx.dataset.load_image(i),
                                                                             o.thumbnail_size))
        except OSError as err:
            log.warning("No thumbnail for %s: %s", ctx.dataset.describe(i), err)
            rel = None
        rows.append({"kind": r["kind"], "index": i, "item": ctx.dataset.describe(i), "label": names[r["label"]],
                     "before": names[r["pred_before"]], "after": names[r["pred_after"]], "thumbnail": rel})
    tables = {**run.tables, "examples": pd.DataFrame(
        rows, columns=["kind", "index", "item", "label", "before", "after", "thumbnail"])}
    path = ctx.write("hierarchy_rerank", run.result.metrics, tables, {**run.extra, "low_confidence_source": note})
    return path, run.result.metrics


def _concept_classes(ctx: _Context) -> tuple[list[str], str]:
    o = ctx.config.concepts
    names = list(ctx.dataset.classnames)
    if o.classes:
        return list(o.classes), "chosen in the config"
    present = set(np.asarray(ctx.dataset.labels)[np.asarray(ctx.dataset.labels) >= 0].tolist())
    classes = ctx.confidence_tables.get("classes")
    if classes is not None and len(classes) and classes["grouped_by"].iloc[0] == "true label":
        order = [int(c) for c in classes["class"]]  # most often low-confidence first
        why = "the classes most often in the low-confidence set O"
    elif ctx.zeroshot is not None:
        acc = ctx.zeroshot.predictions.groupby("label")["correct"].mean().sort_values(kind="stable")
        order, why = [int(c) for c in acc.index], "the classes with the lowest zero-shot accuracy"
    else:
        order, why = list(range(len(names))), "the first classes"
    picked = [names[c] for c in order if c in present][:o.n_classes]
    return picked, why


def _descriptor_pool(ctx: _Context) -> Any:
    from .concepts.descriptors import list_descriptor_pools, load_descriptors

    spec = ctx.config.concepts.descriptors
    if spec != "auto":
        return load_descriptors(spec)
    pools = [p for p in list_descriptor_pools() if p.lower() in ctx.dataset.name.lower()]
    if not pools:
        raise _StageSkipped(f"no shipped descriptor pool matches dataset {ctx.dataset.name!r} (shipped: "
                            f"{', '.join(list_descriptor_pools()) or 'none'}); set concepts.descriptors to a "
                            f".json/.txt pool")
    return load_descriptors(max(pools, key=len))


def _stage_concepts(ctx: _Context) -> tuple[Path, dict[str, Any]]:
    from .concepts.figures import class_figure_png, figure_filename
    from .concepts.pipeline import ConceptConfig, run_concepts

    o = ctx.config.concepts
    pool = _descriptor_pool(ctx)
    classes, why = _concept_classes(ctx)
    if not classes:
        raise _StageSkipped("the dataset has no labelled images")
    config = ConceptConfig(foreground=o.foreground, use_crf=o.crf, mi_variant=o.mi, n_parts=o.parts, seed=o.seed,
                           batch_size=ctx.config.batch_size)
    result = run_concepts(ctx.model, ctx.dataset, ctx.cache, pool, classes=classes,
                          images_per_class=o.images_per_class, templates=ctx.config.templates, config=config,
                          figure_images=o.figure_images)
    fig_rel = f"{ctx.stem()}.figures"
    figures = {}
    for cname, data in result.figures.items():
        rel = f"{fig_rel}/{figure_filename(cname)}"
        atomic_write_bytes(ctx.out / "concepts" / rel, class_figure_png(data, cname))
        figures[cname] = rel
    path = ctx.write("concepts", result.metrics, {"per_image": result.per_image, "per_class": result.per_class,
                                                  "curves": result.curves},
                     {"figures": figures, "skipped": result.skipped, "class_selection": why, **result.info})
    return path, result.metrics


def _stage_retrieval(ctx: _Context) -> tuple[Path, dict[str, Any]]:
    from .retrieval import run_retrieval

    if not ctx.dataset.captions:
        raise _StageSkipped(f"dataset {ctx.dataset.name!r} has no captions")
    result = run_retrieval(ctx.model, ctx.dataset, ctx.cache, ks=tuple(ctx.config.retrieval.k))
    path = ctx.write("zeroshot_retrieval", result.metrics, {"ranks": result.per_query}, {"skipped": result.skipped})
    return path, result.metrics


_RUNNERS: dict[str, Callable[[_Context], tuple[Path, dict[str, Any]]]] = {
    "zeroshot": _stage_zeroshot, "confidence": _stage_confidence, "hierarchy": _stage_hierarchy,
    "concepts": _stage_concepts, "retrieval": _stage_retrieval,
}

#: Headline numbers copied into each model's ``audit`` run (stage -> metric keys), for the side-by-side table.
HEADLINE = {
    "zeroshot": ("acc1", "acc5", "mean_per_class_recall"),
    "confidence": ("acc_name_only", "auroc_S_T", "aurc_S_T", "auroc_msp_ensemble", "size_O"),
    "hierarchy": ("acc1_before", "acc1_after", "n_fixed", "n_broken"),
    "concepts": ("kmeans_mi", "kmeans_auc_reference", "pca_mi", "pca_auc_reference"),
    "retrieval": ("image_to_text_recall@1", "text_to_image_recall@1"),
}


# ----------------------------------------------------------------------------------------------- the job
def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def run_audit(models: Sequence[tuple[str, str | None]] | None = None, dataset: Any = None, *,
              config: AuditConfig | None = None, echo: Callable[[str], None] | None = None) -> AuditResult:
    """Audit ``models`` on ``dataset``: every enabled stage, one cache, results + report.

    Parameters
    ----------
    models : list of (model, pretrained), optional
        Overrides ``config.models``; each model is loaded once.
    dataset : str, path or ImageDataset, optional
        Overrides ``config.dataset`` (None: the config's, default the bundled subset).
    config : AuditConfig, optional
        Every other option (default: :class:`AuditConfig`).
    echo : callable, optional
        Receives one line per stage start/end (default: ``print`` unless ``config.quiet``).

    Returns
    -------
    AuditResult
        ``results_dir`` (``<results_dir>/audit/<name>``), the report path, one :class:`StageRecord`
        per model and stage, timings and cache statistics. Stage failures are recorded, not raised.
    """
    from .cache import EmbeddingCache
    from .data import ImageDataset, create_dataset
    from .models import load_model

    config = dataclasses.replace(config or AuditConfig())
    if models is not None:
        config.models = [ModelSpec(m, p) for m, p in models]
    if isinstance(dataset, (str, os.PathLike)):
        config.dataset = str(dataset)
    _validate(config)
    if echo is None:
        echo = (lambda _line: None) if config.quiet else print
    t_start = time.perf_counter()
    if isinstance(dataset, ImageDataset):
        ds = dataset
    else:
        ds = create_dataset(config.dataset, split=config.split, root=config.root, classnames=config.classnames,
                            limit=config.limit)
    name = config.run_name(ds.name)
    out = Path(config.results_dir) / "audit" / name
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", {**config_to_dict(config), "name": name})
    cache = EmbeddingCache(config.cache_dir, dtype=config.cache_dtype, batch_size=config.batch_size,
                           progress=not config.quiet, enabled=not config.no_cache)
    device = config.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    vers = versions()
    enabled = [s for s in STAGES if getattr(config, s).enabled]
    echo(f"clipaudit audit {name}: {len(config.models)} model(s) on {ds.name} ({len(ds)} images, "
         f"{len(ds.classnames)} classes); stages: {', '.join(enabled) or 'none'}")
    records: list[StageRecord] = []
    for mi, spec in enumerate(config.models, 1):
        label = spec.name + (f" ({spec.pretrained})" if spec.pretrained else "")
        before = dataclasses.replace(cache.stats, keys=[])
        t0 = time.perf_counter()
        echo(f"[model {mi}/{len(config.models)}] loading {label}")
        try:
            model = load_model(spec.name, spec.pretrained, device=device)
        except Exception as err:  # noqa: BLE001 - one unloadable model must not stop the others
            rec = StageRecord(label, "load_model", "failed", time.perf_counter() - t0, f"{type(err).__name__}: {err}")
            records.append(rec)
            echo(f"  load failed: {rec.message}")
            continue
        load_s = time.perf_counter() - t0
        model_records = [StageRecord(label, "load_model", "ok", load_s)]
        common = {"model_info": model.info.as_dict(), "dataset_fingerprint": ds.fingerprint(), "audit": name,
                  "versions": vers}
        ctx = _Context(config, out, model, ds, cache, common)
        for si, stage in enumerate(STAGES, 1):
            if not getattr(config, stage).enabled:
                model_records.append(StageRecord(label, stage, "off", message="switched off"))
                continue
            echo(f"  [{si}/{len(STAGES)}] {stage} ...")
            t = time.perf_counter()
            try:
                path, metrics = _RUNNERS[stage](ctx)
                rec = StageRecord(label, stage, "ok", time.perf_counter() - t, path=str(path.relative_to(out)),
                                  metrics={k: metrics[k] for k in HEADLINE[stage] if k in metrics})
            except _StageSkipped as why:
                rec = StageRecord(label, stage, "skipped", time.perf_counter() - t, str(why))
            except KeyboardInterrupt:
                raise
            except Exception as err:  # noqa: BLE001 - a failed stage is recorded; the others still run
                log.debug("stage %s failed", stage, exc_info=True)
                rec = StageRecord(label, stage, "failed", time.perf_counter() - t, f"{type(err).__name__}: {err}")
                rec.metrics = {"traceback": traceback.format_exc(limit=6)}
            echo(f"  [{si}/{len(STAGES)}] {stage}: {rec.status} in {_fmt_seconds(rec.seconds)}"
                 + (f" ({rec.message})" if rec.message and rec.status != "ok" else ""))
            model_records.append(rec)
        stats = {k: getattr(cache.stats, k) - getattr(before, k)
                 for k in ("images_encoded", "texts_encoded", "hits", "misses")}
        _write_audit_record(ctx, model_records, stats, time.perf_counter() - t0)
        records += model_records
    report, report_error = None, None
    if config.report and any(r.status == "ok" and r.path for r in records):
        t = time.perf_counter()
        echo("[report] building")
        try:
            from .report import build_report

            report = build_report(out, Path(config.reports_dir) / name, title=f"clipaudit audit: {name}")
        except Exception as err:  # noqa: BLE001 - the results are already written; say what went wrong
            log.debug("report failed", exc_info=True)
            report_error = f"{type(err).__name__}: {err}"
        records.append(StageRecord("(all)", "report", "ok" if report else "failed", time.perf_counter() - t,
                                   report_error or ""))
    stats = {k: getattr(cache.stats, k) for k in ("images_encoded", "texts_encoded", "hits", "misses")}
    return AuditResult(out, report, config, records, time.perf_counter() - t_start, stats, report_error)


def _write_audit_record(ctx: _Context, records: list[StageRecord], stats: dict[str, int], seconds: float) -> Path:
    metrics: dict[str, Any] = {}
    for r in records:
        for k, v in r.metrics.items():
            if k != "traceback":
                metrics[f"{r.stage}.{k}"] = v
    metrics.update({f"seconds.{r.stage}": round(r.seconds, 3) for r in records if r.status != "off"})
    metrics["seconds.total"] = round(seconds, 3)
    metrics.update({f"cache.{k}": v for k, v in stats.items()})
    stages = pd.DataFrame([{"stage": r.stage, "status": r.status, "seconds": round(r.seconds, 3),
                            "message": r.message, "result": r.path or ""} for r in records])
    failures = {r.stage: r.metrics.get("traceback", "") for r in records if r.status == "failed"}
    return ctx.write("audit", metrics, {"stages": stages}, {
        "templates": ctx.config.templates, "seconds": round(seconds, 3), "cache_stats": stats,
        "config": config_to_dict(ctx.config), "tracebacks": failures,
        "dataset_size": len(ctx.dataset), "n_classes": len(ctx.dataset.classnames),
    })


def format_summary(result: AuditResult) -> str:
    """One screen: per model and stage, status, time and the headline numbers; then where things are."""
    lines = [f"audit {result.results_dir.name}: {_fmt_seconds(result.seconds)}"]
    current = None
    for r in result.stages:
        if r.model != current:
            current = r.model
            lines.append(f"{r.model}")
        if r.status == "off":
            lines.append(f"  {r.stage:<12} off")
            continue
        nums = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in r.metrics.items() if k != "traceback")
        detail = nums if r.status == "ok" else r.message
        if len(detail) > 160 and r.status == "ok":  # errors are shown whole: they say how to fix them
            detail = detail[:157] + "..."
        lines.append(f"  {r.stage:<12} {r.status:<8} {_fmt_seconds(r.seconds):>9}  {detail}")
    s = result.cache_stats
    lines.append(f"cache: {s['images_encoded']} images and {s['texts_encoded']} texts encoded; "
                 f"{s['hits']} hits, {s['misses']} misses")
    lines.append(f"results: {result.results_dir}")
    if result.report is not None:
        lines.append(f"report:  {result.report}")
    elif result.report_error:
        lines.append(f"report:  FAILED ({result.report_error}); rebuild with `clipaudit report {result.results_dir}`")
    return "\n".join(lines)
