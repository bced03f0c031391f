"""The task registry is the spine: one set of defaults for CLI, audit and config; identified, non-clobbering outputs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_image

from analysis.audit import AuditConfig, config_from_dict, run_audit, task_options
from analysis.cli import build_parser, main
from analysis.tasks import list_tasks
from analysis.tasks._common import DataOptions, ModelOptions, OutputOptions
from analysis.tasks._options import flag_of, from_dict, from_namespace

TASKS = list_tasks()
SHARED = (ModelOptions, DataOptions, OutputOptions)


def _subparser(name):
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "command")
    return action.choices[name]


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_defaults_are_one_object_everywhere(task):
    """For every option of every task: CLI default == audit default == config-file default."""
    from analysis.cli._tasks import TASK_DEST

    args = _subparser(task.cli_name).parse_args([])
    cli = from_namespace(task.options(), args, dest_prefix=TASK_DEST)
    audit = task_options(AuditConfig(), task.name)
    toml = task_options(config_from_dict({task.name: {}}), task.name)
    direct = from_dict(task.options, {})
    for f in dataclasses.fields(task.options):
        values = {getattr(o, f.name) for o in (cli, audit, toml, direct) if not isinstance(getattr(o, f.name), list)}
        lists = [getattr(o, f.name) for o in (cli, audit, toml, direct) if isinstance(getattr(o, f.name), list)]
        assert len(values) <= 1 and all(v == lists[0] for v in lists), (task.name, f.name)
    # shared groups: the audit's top-level default is the command's default
    for cls in (DataOptions, OutputOptions):
        for f in dataclasses.fields(cls):
            assert getattr(from_namespace(cls(), args), f.name) == getattr(AuditConfig(), f.name), f.name


@pytest.mark.parametrize("task", TASKS, ids=lambda t: t.name)
def test_every_option_is_in_help_with_its_default(task):
    text = _subparser(task.cli_name).format_help()
    for cls in (task.options, *SHARED):
        for f in dataclasses.fields(cls):
            assert flag_of(f) in text, (task.name, f.name)
    audit_help = _subparser("audit").format_help()
    for f in dataclasses.fields(task.options):
        assert flag_of(f, f"{task.cli_name}-") in audit_help, (task.name, f.name)
    assert f"--no-{task.cli_name}" in audit_help


def test_task_flags_never_collide_with_shared_flags():
    shared = {flag_of(f) for cls in SHARED for f in dataclasses.fields(cls)}
    for task in TASKS:
        own = {flag_of(f) for f in dataclasses.fields(task.options)}
        assert not own & shared, (task.name, own & shared)


def test_a_registered_task_appears_everywhere(monkeypatch):
    """Registering one task (here a throwaway) adds its command, audit flags and config table: no other edit."""
    from analysis import audit
    from analysis.tasks import TASKS as REGISTRY
    from analysis.tasks import Task, TaskResult
    from analysis.tasks._options import option

    @dataclasses.dataclass
    class Opts:
        alpha: float = option(0.5, low=0, high=1, help="a test option")

    task = Task(name="toy_task", help="toy", description="toy", options=Opts,
                run=lambda ctx, o: TaskResult({"alpha": o.alpha}), uses_classifier=False, in_audit=False)
    monkeypatch.setitem(REGISTRY._entries, "toy_task", task)
    monkeypatch.setitem(REGISTRY._help, "toy_task", "toy")
    monkeypatch.setattr(audit, "AuditConfig", audit.make_config_class())
    assert "toy_task" in build_parser().format_help()
    assert "--toy-task-alpha" in _subparser("audit").format_help()
    assert audit.AuditConfig().toy_task.alpha == 0.5 and audit.AuditConfig().toy_task.enabled is False
    config = audit.config_from_dict({"toy_task": {"alpha": 0.25, "enabled": True}})
    assert audit.task_options(config, "toy_task") == Opts(alpha=0.25)


def test_help_imports_no_torch():
    """`clipaudit --help` and a task's --help import no torch, torchvision, sklearn or open_clip."""
    code = ("import sys; from analysis.cli import main\n"
            "for argv in (['--help'], ['confidence', '--help'], ['audit', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "bad = [m for m in ('torch', 'torchvision', 'sklearn', 'open_clip') if m in sys.modules]\n"
            "print('HEAVY', bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


@pytest.mark.parametrize("module", ["analysis.zeroshot", "analysis.hierarchy", "analysis.metrics", "analysis.selective",
                                    "analysis.confidence", "analysis.classifier", "analysis.ensemble"])
def test_pure_modules_import_no_torch(module):
    code = f"import sys, {module}; print('TORCH', 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TORCH False" in out


def _run_json(capsys) -> dict:
    out = capsys.readouterr().out
    path = next(line.split("results: ", 1)[1] for line in out.splitlines() if line.startswith("results: "))
    return json.loads(open(path).read()), out


def test_runs_with_other_settings_never_overwrite(tmp_path, capsys):
    base = ["zeroshot", "-m", "clipaudit-tiny-vit", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"),
            "-q", "--templates", "simple_imagenet"]
    assert main([*base, "--limit", "20"]) == 0
    a, out_a = _run_json(capsys)
    assert main([*base, "--limit", "30"]) == 0
    b, _ = _run_json(capsys)
    assert main([*base[:-2], "--templates", "photo", "--limit", "20"]) == 0
    c, _ = _run_json(capsys)
    files = sorted((tmp_path / "r" / "zeroshot_classification").glob("*.json"))
    assert len(files) == 3
    assert a["identity"]["data"]["subset"]["n"] == 20 and b["identity"]["data"]["subset"]["n"] == 30
    assert "subset20" in str(files) and "subset30" in str(files)
    assert "subset" in out_a.lower() and "not full-dataset numbers" in out_a
    assert a["identity"]["prompts"]["name"] == "simple_imagenet" and c["identity"]["prompts"]["name"] == "photo"
    assert a["identity"]["key"] != c["identity"]["key"]
    # the same settings find the same file (and --skip-existing reuses it)
    assert main([*base, "--limit", "20", "--skip-existing"]) == 0
    again, out = _run_json(capsys)
    assert again["identity"]["key"] == a["identity"]["key"] and "reused" in out
    assert len(list((tmp_path / "r" / "zeroshot_classification").glob("*.json"))) == 3


def test_limit_audit_encodes_each_view_once_and_says_subset(tmp_path):
    """Cold audit on 300 images: 600 image encodings (original + flip), each image decoded once, a subset banner."""
    from analysis.data import create_dataset

    ds = create_dataset("bundled", limit=300)
    calls = np.zeros(len(ds.parent), int)
    real = ds.parent.load_image

    def counting(i):
        calls[i] += 1
        return real(i)

    ds.parent.load_image = counting
    cfg = AuditConfig(out=str(tmp_path / "r"), reports_dir=str(tmp_path / "rep"), cache_dir=str(tmp_path / "c"),
                      quiet=True, name="limit300", limit=300)
    cfg.models[0].name = "clipaudit-tiny-vit"
    cfg.concepts.enabled = cfg.hierarchy.enabled = False
    cfg.confidence.n_boot = 20
    result = run_audit(config=cfg, dataset=ds)
    assert result.ok, result.stages
    assert result.cache_stats["images_encoded"] == 600
    assert calls[ds.indices].tolist() == [1] * 300 and calls.sum() == 300
    html = result.report.read_text()
    assert "SUBSET" in html and "300 of 1,000 images" in html
    for rec in result.stages:
        if rec.path and rec.stage != "audit":
            record = json.loads((result.results_dir / rec.path).read_text())
            assert record["subset"]["n"] == 300 and "subset: 300 of 1,000" in record["data"]


def test_linear_probe_chooses_c_on_validation_only(tmp_path, capsys):
    """The probe trains on the train split, picks C on held-out train images, and is scored on the test split."""
    from analysis.tasks.linear_probe import fit_linear_probe

    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 60, 230)}
    for split, n in (("train", 10), ("test", 4)):
        for name, colour in colours.items():
            (tmp_path / "data" / split / name).mkdir(parents=True)
            for i in range(n):
                make_image(rng, colour).save(tmp_path / "data" / split / name / f"{i}.png")
    argv = ["linear-probe", "-m", "clipaudit-tiny-rn", "-d", str(tmp_path / "data"), "--split", "test",
            "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "-q", "--val-fraction", "0.3"]
    assert main(argv) == 0
    record, _ = _run_json(capsys)
    assert record["train_data"]["split"] == "train" and record["identity"]["data"]["split"] == "test"
    assert record["metrics"]["n_train"] == 30 and record["metrics"]["n_images"] == 12
    # the chosen C is the best on the validation part, recomputed directly
    x = rng.normal(size=(60, 8))
    y = np.repeat(np.arange(3), 20)
    x[np.arange(60), y] += 2.0
    model, best, sweep = fit_linear_probe(x, y, c_values=[1e-3, 1.0], val_fraction=0.25, max_iter=200, seed=0)
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    fit, val = train_test_split(np.arange(60), test_size=0.25, random_state=0, stratify=y)  # computed directly
    direct = {c: LogisticRegression(C=c, max_iter=200).fit(x[fit], y[fit]).score(x[val], y[val]) for c in (1e-3, 1.0)}
    assert [r["val_acc1"] for r in sweep] == [direct[1e-3], direct[1.0]]
    assert best == max(direct, key=lambda c: (direct[c], -c))  # best on validation; ties: stronger regularisation
    assert model.C == best and model.coef_.shape == (3, 8)  # refitted on every train row with the chosen C
    # on the test split itself the probe is refused
    assert main([*argv[:5], "--split", "train", *argv[7:]]) == 2
