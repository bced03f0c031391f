"""Import rules of the package (style guide §2): who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "analysis"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Project modules imported by ``path`` (absolute names), including function-level imports."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.startswith("analysis"):
                out.add(mod)
                out.update(f"{mod}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("analysis"))
    return out


MODULES = {_module_name(p): _imports(p) for p in PKG.rglob("*.py")}


def _importers_of(prefix: str) -> dict[str, set[str]]:
    return {m: {i for i in imps if i == prefix or i.startswith(prefix + ".")} for m, imps in MODULES.items()}


def _in(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


BASE = ("analysis._checks", "analysis._registry", "analysis._atomic", "analysis._io", "analysis.resources")


def test_base_helpers_import_only_base_helpers():
    for m in BASE:
        bad = {i for i in MODULES[m] if not _in(i, *BASE)}
        assert not bad, f"{m} imports {bad}"


@pytest.mark.parametrize("a, b", [("analysis.data", "analysis.models"), ("analysis.models", "analysis.data")])
def test_data_and_models_are_independent(a, b):
    bad = {m: i for m, i in _importers_of(b).items() if _in(m, a) and i}
    assert not bad, f"{a} must not import {b}: {bad}"


PURE = ("analysis.ensemble", "analysis.metrics", "analysis.selective", "analysis.classifier", "analysis.guarantees",
        "analysis.calibration", "analysis.conformal", "analysis.hierarchical_sets",
        "analysis.confidence.core", "analysis.confidence.scores", "analysis.confidence.summary",
        "analysis.concepts.spectral",
        "analysis.concepts.clusters", "analysis.concepts.matching", "analysis.concepts.mutual_info")


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_do_not_touch_models_cache_or_files(module):
    bad = {i for i in MODULES[module] if _in(i, "analysis.models", "analysis.cache", "analysis.results",
                                                   "analysis.cli")}
    assert not bad, f"{module} imports {bad}"


def test_report_reads_results_only():
    """A report rebuilds from result files: it may use pure array functions, never models, data or caches."""
    allowed = (*BASE, *PURE, "analysis.results", "analysis.report", "analysis.provenance")
    for m, imps in MODULES.items():
        if _in(m, "analysis.report"):
            bad = {i for i in imps if not _in(i, *allowed)}
            assert not bad, f"{m} imports {bad}: a report must rebuild without models or data"


def test_nothing_imports_the_cli():
    bad = {m for m, imps in _importers_of("analysis.cli").items() if imps and not _in(m, "analysis.cli")}
    assert not bad - {"analysis.__main__"}, bad


def test_scanner_sees_relative_and_function_level_imports():
    """Guards the checks above against passing vacuously."""
    assert "analysis.metrics" in MODULES["analysis.zeroshot"]  # from .metrics import ...
    assert "analysis.cache" in MODULES["analysis.tasks._load"]  # from ..cache import ..., inside a function
    assert "analysis.models.load_model" in MODULES["analysis.cli._common"]  # inside a function
    assert "analysis._checks" in MODULES["analysis.data.prompts"]  # from .._checks


def test_only_the_registry_knows_the_tasks():
    """No module outside ``analysis.tasks`` spells out the list of tasks (in a list, tuple, set or dict)."""
    from analysis.tasks import task_names

    names = set(task_names())
    offenders = []
    for path in PKG.rglob("*.py"):
        module = _module_name(path)
        if _in(module, "analysis.tasks"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            items = node.elts if isinstance(node, (ast.List, ast.Tuple, ast.Set)) else \
                node.keys if isinstance(node, ast.Dict) else []
            found = {i.value for i in items if isinstance(i, ast.Constant) and i.value in names}
            if len(found) >= 2:
                offenders.append(f"{module}:{node.lineno} {sorted(found)}")
    assert not offenders, offenders


def test_tasks_register_through_the_registry_only():
    """Each task module registers exactly one task, under its own module name."""
    from analysis.tasks import list_tasks

    for task in list_tasks():
        assert (PKG / "tasks" / f"{task.name}.py").is_file(), task.name
