"""The main job: every registered task on one embedding cache, one results folder, one report.

:func:`run_audit` loads each model once and runs the enabled tasks of :mod:`analysis.tasks` in registry
order on one :class:`~analysis.tasks._context.TaskContext` (one decode pass for every image view the tasks
need, one classifier state). A task that fails is recorded (status, error) and the others still run.

Options are an :class:`AuditConfig`, generated from the registry: top-level keys are the shared option groups
(:mod:`analysis.tasks._common`) and the audit's own; one table per task holds ``enabled`` and the task's own
options. So the TOML schema, the ``clipaudit audit`` flags and each ``clipaudit <task>`` command share one
set of defaults.

Everything goes to ``<out>/audit/<name>/``: each task's run files (named by their settings), ``config.json``
(the effective configuration), ``runs.json`` (the run id and the files this run wrote, which is all the report
reads) and one ``audit`` record per model with the stage table and timings; the report to
``<reports_dir>/<name>/index.html``.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._atomic import atomic_write_bytes, atomic_write_json
from ._checks import ClipauditError
from ._io import read_user_json, read_user_text
from .provenance import describe_data, slug, subset_note
from .tasks import list_tasks
from .tasks._common import DataOptions, ModelOptions, OutputOptions
from .tasks._options import from_dict, option, to_dict, validate

__all__ = ["AuditConfig", "ModelSpec", "AuditResult", "StageRecord", "load_config", "config_from_dict",
           "config_to_dict", "run_audit", "format_summary", "task_options", "stage_names"]


@dataclass
class ModelSpec:
    """A model to audit: a name understood by :func:`analysis.models.load_model` and its weights."""

    name: str = ModelOptions().model
    pretrained: str | None = None


def _stage_class(task: Any) -> type:
    """``<task options> + enabled``: the task's table in the audit config."""
    return dataclasses.make_dataclass(
        f"{task.options.__name__}Stage",
        [("enabled", bool, option(task.in_audit, help=f"run the {task.name} task in the audit"))],
        bases=(task.options,))


def _audit_fields() -> list[tuple[str, Any, Any]]:
    own = [
        ("models", list[ModelSpec], field(default_factory=lambda: [ModelSpec()])),
        ("name", str | None, option(None, help="run name: folder under OUT/audit and REPORTS_DIR (none: "
                                               "<model>[+<model>]_<dataset>[-subsetN])")),
        ("device", str, _copy_field(next(f for f in dataclasses.fields(ModelOptions) if f.name == "device"))),
        ("reports_dir", str, option("reports", help="where the HTML report goes (REPORTS_DIR/NAME/index.html)")),
        ("report", bool, option(True, help="build the HTML report")),
    ]
    shared = [(f.name, f.type, _copy_field(f)) for cls in (DataOptions, OutputOptions) for f in dataclasses.fields(cls)]
    stages = []
    for task in list_tasks():
        cls = _stage_class(task)
        stages.append((task.name, cls, field(default_factory=cls)))
    return own + shared + stages


def _copy_field(f: Any) -> Any:
    """A fresh field with ``f``'s default and metadata (a Field object belongs to one dataclass)."""
    return dataclasses.field(default=f.default, default_factory=f.default_factory, metadata=f.metadata)


def make_config_class() -> type:
    """The audit's config dataclass, generated from the shared option groups and the task registry."""
    return dataclasses.make_dataclass("AuditConfig", _audit_fields(), namespace={
        "__doc__": "Every option of an audit. Defaults: clipaudit-lit on the bundled subset, every task on.",
        "__module__": __name__,
    })


#: Every option of an audit (generated from the task registry at import; see the module docstring).
AuditConfig = make_config_class()


def _config_class() -> type:
    return globals()["AuditConfig"]  # looked up at call time, so a regenerated class is used


def stage_names() -> list[str]:
    """The tasks of an audit, in run order."""
    return [t.name for t in list_tasks()]


def task_options(config: Any, name: str) -> Any:
    """The task's own options object (without ``enabled``) from the audit config."""
    from .tasks import get_task

    task = get_task(name)
    stage = getattr(config, name)
    return task.options(**{f.name: getattr(stage, f.name) for f in dataclasses.fields(task.options)})


def _group(config: Any, cls: type) -> Any:
    return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def run_name(config: Any, dataset: Any) -> str:
    """``config.name``, else ``<model>[+<model>...]_<dataset>[-subsetN]``."""
    if config.name:
        return slug(config.name)
    models = "+".join(slug(m.name) + (f"-{slug(m.pretrained)}" if m.pretrained else "") for m in config.models)
    sub = getattr(dataset, "subset_info", lambda: None)()
    suffix = f"-subset{sub['n']}" if sub else ""
    return f"{models}_{slug(dataset.name)}{suffix}"[:120]


def _validate(config: Any) -> None:
    seen = set()
    if not config.models:
        raise ClipauditError("config option 'models' must list at least one model ([[models]] name = ...).")
    for m in config.models:
        key = (m.name, m.pretrained)
        if key in seen:
            raise ClipauditError(f"Model {m.name!r} (pretrained {m.pretrained!r}) is listed twice.")
        seen.add(key)
    validate(config)


def config_from_dict(data: dict[str, Any]) -> Any:
    """Build an :data:`AuditConfig` from nested dicts (as read from TOML or the saved JSON); validate it."""
    if not isinstance(data, dict):
        raise ClipauditError(f"config must be a table of options, got {data!r}.")
    data = dict(data)
    models = data.pop("models", None)
    config = from_dict(_config_class(), data, "")
    if models is not None:
        if not isinstance(models, list) or not models:
            raise ClipauditError(f"config option 'models' must be a non-empty list of tables ([[models]] name = ...), "
                                 f"got {models!r}.")
        config.models = [from_dict(ModelSpec, m, f"models[{i}]") for i, m in enumerate(models)]
    _validate(config)
    return config


def config_to_dict(config: Any) -> dict[str, Any]:
    """Nested plain dict of ``config`` (None kept; TOML has no null, so omit those keys when writing TOML)."""
    return to_dict(config)


def load_config(path: str | os.PathLike[str]) -> Any:
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


# ----------------------------------------------------------------------------------------------- records
@dataclass
class StageRecord:
    """Outcome of one task (or model load, or report) for one model."""

    model: str
    stage: str
    status: str  # "ok", "skipped", "failed", "off", "reused"
    seconds: float = 0.0
    message: str = ""
    path: str | None = None  # run JSON, relative to the audit folder
    metrics: dict[str, Any] = field(default_factory=dict)
    verdict: list[str] = field(default_factory=list)  # the answer in words (tasks that give one)


@dataclass
class AuditResult:
    """What :func:`run_audit` made. ``os.fspath(result)`` is the results folder."""

    results_dir: Path
    report: Path | None
    config: Any
    stages: list[StageRecord]
    seconds: float
    cache_stats: dict[str, int]
    data: dict[str, Any]
    run_id: str
    report_error: str | None = None

    def __fspath__(self) -> str:
        return str(self.results_dir)

    @property
    def ok(self) -> bool:
        return self.report_error is None and all(s.status in ("ok", "skipped", "off", "reused") for s in self.stages)


def _fmt_seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


_STATS = ("images_encoded", "images_decoded", "texts_encoded", "hits", "misses", "healed")


def _stats(cache: Any) -> dict[str, int]:
    return {k: int(getattr(cache.stats, k, 0)) for k in _STATS}


def run_audit(models: Sequence[tuple[str, str | None]] | None = None, dataset: Any = None, *,
              config: Any = None, echo: Callable[[str], None] | None = None) -> AuditResult:
    """Audit ``models`` on ``dataset``: every enabled task, one cache, results + report.

    Parameters
    ----------
    models : list of (model, pretrained), optional
        Overrides ``config.models``; each model is loaded once.
    dataset : str, path or ImageDataset, optional
        Overrides ``config.dataset``.
    config : AuditConfig, optional
        Every other option (default: ``AuditConfig()``).
    echo : callable, optional
        Receives one line per task start/end (default: ``print`` unless ``config.quiet``).

    Returns
    -------
    AuditResult
        ``results_dir`` (``<out>/audit/<name>``), the report path, one :class:`StageRecord` per model and
        task, timings, cache statistics and the data identity. Task failures are recorded, not raised.
    """
    from .data import ImageDataset
    from .provenance import data_identity
    from .tasks import get_task
    from .tasks._load import load_dataset, load_model, make_cache
    from .tasks._runner import run_tasks

    config = dataclasses.replace(config or _config_class()())
    if models is not None:
        config.models = [ModelSpec(m, p) for m, p in models]
    if isinstance(dataset, (str, os.PathLike)):
        config.dataset = str(dataset)
    _validate(config)
    if echo is None:
        echo = (lambda _line: None) if config.quiet else print
    t_start = time.perf_counter()
    data_options = None if isinstance(dataset, ImageDataset) else _group(config, DataOptions)
    ds = dataset if data_options is None else load_dataset(data_options)
    name = run_name(config, ds)
    from ._atomic import clean_stale_temps
    from .results import output_folder

    cache = make_cache(_group(config, OutputOptions))  # a bad --cache-dir fails before anything is written
    output_folder(config.out)
    output_folder(config.reports_dir, "--reports-dir")
    out = output_folder(Path(config.out) / "audit" / name)
    for folder in (out, Path(config.reports_dir) / name):  # temp files of killed earlier runs
        clean_stale_temps(folder, recursive=True)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
    atomic_write_json(out / "config.json", {**config_to_dict(config), "name": name})
    data = data_identity(ds)
    plan = [(get_task(n), task_options(config, n)) for n in stage_names() if getattr(config, n).enabled]
    echo(f"clipaudit audit {name}: {len(config.models)} model(s) on {describe_data(data)} "
         f"({len(ds.classnames)} classes); tasks: {', '.join(t.name for t, _ in plan) or 'none'}")
    if subset_note(data):
        echo(f"  NOTE: {subset_note(data)}: the numbers are not full-dataset numbers.")
    records: list[StageRecord] = []
    written: list[str] = []
    for mi, spec in enumerate(config.models, 1):
        label = spec.name + (f" ({spec.pretrained})" if spec.pretrained else "")
        before = _stats(cache)
        t0 = time.perf_counter()
        echo(f"[model {mi}/{len(config.models)}] loading {label}")
        try:
            model = load_model(spec.name, spec.pretrained, config.device)
        except Exception as err:  # noqa: BLE001 - one unloadable model must not stop the others
            message = str(err) if isinstance(err, ClipauditError) else f"{type(err).__name__}: {err}"
            records.append(StageRecord(label, "load_model", "failed", time.perf_counter() - t0, message))
            echo(f"  load failed: {message}")
            continue
        model_records = [StageRecord(label, "load_model", "ok", time.perf_counter() - t0)]
        task_records = run_tasks(model, ds, cache, plan, out_dir=out, templates=config.templates, run_id=run_id,
                                 skip_existing=config.skip_existing, echo=echo, extra={"audit": name},
                                 data_options=data_options)
        enabled = {t.name for t, _ in plan}
        by_name = {r.task: r for r in task_records}
        tracebacks = {}
        for n in stage_names():
            if n not in enabled:
                model_records.append(StageRecord(label, n, "off", message="switched off"))
                continue
            r = by_name[n]
            rel = str(r.path.relative_to(out)) if r.path is not None else None
            if rel:
                written.append(rel)
            if r.traceback:
                tracebacks[n] = r.traceback
            verdict = list((r.result.info.get("verdict_lines") or []) if r.result is not None else [])
            model_records.append(StageRecord(label, n, r.status, r.seconds, r.message, rel, r.metrics, verdict))
            policy = r.result.files.get("deployment_policy.json") if r.result is not None else None
            if policy is not None:  # where a user looks for it: the top of the audit folder
                one = len(config.models) == 1
                target = out / ("deployment_policy.json" if one else f"deployment_policy.{slug(label)}.json")
                atomic_write_bytes(target, policy)
                written.append(str(target.relative_to(out)))
        after = _stats(cache)
        stats = {k: after[k] - before[k] for k in _STATS}
        path = _write_audit_record(out, model, ds, config, name, run_id, model_records, stats,
                                   time.perf_counter() - t0, tracebacks)
        written.append(str(path.relative_to(out)))
        records += model_records
    report, report_error = None, None
    # One lock per run name: the manifest and the report it is built from are replaced together, so two audits
    # into the same --name each end with a report of one complete run (the later one), never a mix.
    from filelock import FileLock

    with FileLock(str(out.parent / f".{name}.lock")):
        atomic_write_json(out / "runs.json", {"run_id": run_id, "name": name, "data": data, "files": written})
        if config.report and any(r.status in ("ok", "reused") and r.path for r in records):
            t = time.perf_counter()
            echo("[report] building")
            try:
                from .report import build_report

                report = build_report(out, Path(config.reports_dir) / name, title=f"clipaudit audit: {name}")
            except Exception as err:  # noqa: BLE001 - the results are already written; say what went wrong
                report_error = f"{type(err).__name__}: {err}"
            records.append(StageRecord("(all)", "report", "ok" if report else "failed", time.perf_counter() - t,
                                       report_error or ""))
    return AuditResult(out, report, config, records, time.perf_counter() - t_start, _stats(cache), data, run_id,
                       report_error)


def _write_audit_record(out: Path, model: Any, ds: Any, config: Any, name: str, run_id: str,
                        records: list[StageRecord], stats: dict[str, int], seconds: float,
                        tracebacks: dict[str, str]) -> Path:
    import pandas as pd

    from .provenance import RunIdentity, data_identity, prompt_identity, versions
    from .results import write_identified_run

    metrics: dict[str, Any] = {}
    for r in records:
        for k, v in r.metrics.items():
            metrics[f"{r.stage}.{k}"] = v
    metrics.update({f"seconds.{r.stage}": round(r.seconds, 3) for r in records if r.status != "off"})
    metrics["seconds.total"] = round(seconds, 3)
    metrics.update({f"cache.{k}": v for k, v in stats.items()})
    stages = pd.DataFrame([{"stage": r.stage, "status": r.status, "seconds": round(r.seconds, 3),
                            "message": r.message, "result": r.path or ""} for r in records])
    from .data import load_templates

    identity = RunIdentity(task="audit", model=model.info.as_dict(), data=data_identity(ds),
                           prompts=prompt_identity(load_templates(config.templates)),
                           options={"run_id": run_id}, embedding_dtype=config.cache_dtype, versions=versions())
    return write_identified_run(out, identity, result_name="audit", metrics=metrics, tables={"stages": stages},
                                extra={"run_id": run_id, "audit": name, "templates": config.templates,
                                       "seconds": round(seconds, 3), "cache_stats": stats,
                                       "config": config_to_dict(config), "tracebacks": tracebacks,
                                       "data": describe_data(data_identity(ds)), "dataset_size": len(ds),
                                       "n_classes": len(ds.classnames)})


def format_summary(result: AuditResult) -> str:
    """One screen: per model and task, status, time and the headline numbers; then where things are."""
    lines = [f"audit {result.results_dir.name}: {_fmt_seconds(result.seconds)} on {describe_data(result.data)}"]
    if subset_note(result.data):
        lines.append(f"NOTE: {subset_note(result.data)}: these are not full-dataset numbers.")
    verdicts = [(r.model, r.verdict) for r in result.stages if r.verdict]
    if verdicts:
        lines.append("VERDICT")
        for model, verdict in verdicts:
            lines += [f"  {model}: {verdict[0]}", *(f"    {v}" for v in verdict[1:])]
    current = None
    for r in result.stages:
        if r.model != current:
            current = r.model
            lines.append(f"{r.model}")
        if r.status == "off":
            lines.append(f"  {r.stage:<12} off")
            continue
        nums = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in r.metrics.items())
        detail = nums if r.status in ("ok", "reused") else r.message
        if len(detail) > 160 and r.status == "ok":  # errors are shown whole: they say how to fix them
            detail = detail[:157] + "..."
        lines.append(f"  {r.stage:<12} {r.status:<8} {_fmt_seconds(r.seconds):>9}  {detail}")
    s = result.cache_stats
    lines.append(f"cache: {s['images_encoded']} image encodings ({s['images_decoded']} images decoded) and "
                 f"{s['texts_encoded']} texts encoded; {s['hits']} hits, {s['misses']} misses"
                 + (f"; {s['healed']} corrupt entries recomputed" if s.get("healed") else ""))
    lines.append(f"results: {result.results_dir}")
    if result.report is not None:
        lines.append(f"report:  {result.report}")
    elif result.report_error:
        lines.append(f"report:  FAILED ({result.report_error}); rebuild with `clipaudit report {result.results_dir}`")
    return "\n".join(lines)
