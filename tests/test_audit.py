"""`clipaudit audit`: every stage on one cache, warm re-runs encode nothing, config files, failures isolated."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import EVIL_CLASS, small_audit_config, write_audit_manifest

from analysis._checks import ClipauditError
from analysis.audit import AuditConfig, config_from_dict, config_to_dict, load_config, run_audit
from analysis.report.build import run_file
from analysis.results import read_run
from analysis.tasks.hierarchy import hierarchy_examples


def _wordnet_available() -> bool:
    from analysis.data.wordnet import find_wordnet

    try:
        find_wordnet(download=False)
    except ClipauditError:
        return False
    return True


def _status(result, stage):
    (rec,) = [r for r in result.stages if r.stage == stage]
    return rec


def test_audit_end_to_end(audit_run):
    result, tmp, _ = audit_run
    out = result.results_dir
    assert out == tmp / "results" / "audit" / "tiny"
    for stage in ("zeroshot", "confidence", "concepts", "retrieval"):
        assert _status(result, stage).status == "ok", _status(result, stage)
    hier = _status(result, "hierarchy")
    if _wordnet_available():
        assert hier.status == "ok", hier
    else:
        assert hier.status == "skipped" and "WordNet" in hier.message
    assert result.report is not None and result.report.is_file()
    assert (result.report.parent / "report.json").is_file()
    assert json.loads((out / "config.json").read_text())["name"] == "tiny"

    # the hierarchy stage reranks exactly the confidence stage's low-confidence set O
    conf, conf_tables = read_run(out / _status(result, "confidence").path)
    if hier.status == "ok":
        rec, tables = read_run(out / hier.path)
        hier_json = out / hier.path
        in_o = conf_tables["per_sample"].set_index("index")["in_O"]
        preds = tables["predictions"].set_index("index")
        assert preds["low_confidence"].equals(in_o.reindex(preds.index).astype(bool))
        assert rec["low_confidence_source"].startswith("low-confidence set O from the confidence stage")
        # thumbnails of every fixed/broken example are files next to the run
        ex = tables["examples"]
        assert set(ex["kind"]) <= {"fixed", "broken"}
        for rel in ex["thumbnail"]:
            assert run_file(rec, hier_json, rel).is_file()
    # zero-shot accuracy equals a direct computation from its own per-image table
    zs, zs_tables = read_run(out / _status(result, "zeroshot").path)
    p = zs_tables["predictions"]
    assert zs["metrics"]["acc1"] == pytest.approx(float((p["label"] == p["pred"]).mean()))
    # concepts explained the requested classes, with one PNG figure each
    cc, _ = read_run(out / _status(result, "concepts").path)
    assert set(cc["figures"]) == {"apple", EVIL_CLASS}
    for rel in cc["figures"].values():
        assert run_file(cc, out / _status(result, "concepts").path, rel).read_bytes()[:4] == b"\x89PNG"
    # the audit record has the stage table and per-stage timings
    audit, audit_tables = read_run(next((out / "audit").glob("*.json")))
    stages = audit_tables["stages"].set_index("stage")
    assert stages.loc["zeroshot", "status"] == "ok"
    assert audit["metrics"]["zeroshot.acc1"] == zs["metrics"]["acc1"]
    assert all(f"seconds.{s}" in audit["metrics"] for s in ("load_model", "zeroshot", "confidence"))
    assert audit["versions"]["torch"] and audit["versions"]["open_clip"]


def test_warm_rerun_encodes_nothing(audit_run):
    result, tmp, dataset = audit_run
    assert result.cache_stats["images_encoded"] > 0  # the cold run did encode
    warm = run_audit(config=small_audit_config(tmp, dataset, name="tiny-warm"))
    assert warm.cache_stats["images_encoded"] == 0
    assert warm.cache_stats["texts_encoded"] == 0
    assert warm.cache_stats["misses"] == 0  # patch tokens and concept prompts too
    for stage in ("zeroshot", "confidence", "concepts"):
        a, _ = read_run(result.results_dir / _status(result, stage).path)
        b, _ = read_run(warm.results_dir / _status(warm, stage).path)
        assert a["metrics"] == b["metrics"]


def test_toml_config_round_trip(tmp_path):
    toml = tmp_path / "audit.toml"
    toml.write_text("""
name = "nightly"
dataset = "bundled"
limit = 50
[[models]]
name = "clipaudit-tiny-rn"
[[models]]
name = "clipaudit-tiny-vit"
pretrained = "none.pt"
[confidence]
target_accuracy = 0.9
perturbations = ["hflip", "rot:10"]
splits = [[0, 1], [2, 3]]
[hierarchy]
keep_fraction = 1
[concepts]
enabled = false
classes = ["bag", "sandal"]
""")
    cfg = load_config(toml)
    assert [(m.name, m.pretrained) for m in cfg.models] == [("clipaudit-tiny-rn", None),
                                                            ("clipaudit-tiny-vit", "none.pt")]
    assert cfg.limit == 50 and cfg.confidence.target_accuracy == 0.9
    assert cfg.confidence.splits == [[0, 1], [2, 3]]
    assert cfg.hierarchy.keep_fraction == 1.0 and isinstance(cfg.hierarchy.keep_fraction, float)
    assert cfg.concepts.enabled is False and cfg.concepts.classes == ["bag", "sandal"]
    assert cfg.zeroshot.enabled and cfg.confidence.n_boot == AuditConfig().confidence.n_boot  # untouched defaults
    # the saved form (JSON, as run_audit writes config.json) reads back to the same config
    saved = tmp_path / "config.json"
    saved.write_text(json.dumps(config_to_dict(cfg)))
    assert load_config(saved) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize("text, words", [
    ("limt = 5", ["limt", "limit"]),
    ("[confidence]\nn_bot = 5", ["confidence.n_bot", "n_boot"]),
    ("limit = 'many'", ["limit", "many"]),
    ("[hierarchy]\nset = 'some'", ["hierarchy.set", "low-confidence"]),
    ("models = []", ["models"]),
    ("[confidence]\nperturbations = 'hflip'", ["confidence.perturbations", "list"]),
])
def test_config_errors_name_the_option(tmp_path, text, words):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ClipauditError) as err:
        load_config(path)
    for w in words:
        assert w in str(err.value)


def test_failing_stage_keeps_the_others(tmp_path, monkeypatch):
    import dataclasses

    import analysis.data.wordnet as wordnet
    from analysis.tasks import TASKS, get_task

    def boom(ctx, options):
        raise RuntimeError("concepts exploded")

    def no_wordnet(*a, **k):
        raise ClipauditError("WordNet was not found (test).")

    monkeypatch.setitem(TASKS._entries, "concepts", dataclasses.replace(get_task("concepts"), run=boom))
    monkeypatch.setattr(wordnet, "load_wordnet", no_wordnet)
    dataset = write_audit_manifest(tmp_path / "data")
    cfg = small_audit_config(tmp_path, dataset, name="broken")
    cfg.retrieval.enabled = False
    result = run_audit(config=cfg)
    assert not result.ok
    assert _status(result, "concepts").status == "failed"
    assert "concepts exploded" in _status(result, "concepts").message
    hier = _status(result, "hierarchy")
    assert hier.status == "skipped" and "WordNet was not found" in hier.message
    assert _status(result, "retrieval").status == "off"
    for stage in ("zeroshot", "confidence"):
        rec = _status(result, stage)
        assert rec.status == "ok" and (result.results_dir / rec.path).is_file()
    html = result.report.read_text()
    assert "concepts exploded" in html and "WordNet was not found" in html
    audit_rec, tables = read_run(next((result.results_dir / "audit").glob("*.json")))
    assert "concepts exploded" in audit_rec["tracebacks"]["concepts"]


def test_cli_audit_with_config_and_switches(tmp_path, capsys):
    from analysis.cli import main

    dataset = write_audit_manifest(tmp_path / "data")
    cfg = small_audit_config(tmp_path, dataset, name="cli")
    toml = tmp_path / "a.toml"
    toml.write_text(f"""
dataset = {json.dumps(str(dataset))}
templates = "simple_imagenet"
out = {json.dumps(str(tmp_path / "results"))}
reports_dir = {json.dumps(str(tmp_path / "reports"))}
cache_dir = {json.dumps(cfg.cache_dir)}
[confidence]
n_boot = 20
""")
    argv = ["audit", "--config", str(toml), "-m", "clipaudit-tiny-rn", "--name", "cli", "-q", "--no-hierarchy",
            "--no-concepts", "--no-retrieval", "--target-accuracy", "0.8"]
    assert main(argv + ["--show-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["confidence"]["n_boot"] == 20 and shown["confidence"]["target_accuracy"] == 0.8
    assert shown["hierarchy"]["enabled"] is False and shown["models"][0]["name"] == "clipaudit-tiny-rn"
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "hierarchy" in out and "off" in out
    assert (tmp_path / "reports" / "cli" / "index.html").is_file()
    thr = pd.read_parquet(next((tmp_path / "results" / "audit" / "cli" / "confidence").glob("*.thresholds.parquet")))
    assert np.allclose(thr["target_accuracy"], 0.8)
    assert main(["audit", "-m", "a", "-m", "b", "-p", "x"]) == 2  # one --pretrained per --model


def test_hierarchy_examples_direct():
    preds = pd.DataFrame({"index": [0, 1, 2, 3, 4, 5], "label": [0, 1, 1, 2, -1, 0],
                          "pred_before": [1, 1, 0, 2, 0, 0], "pred_after": [0, 0, 1, 2, 1, 0]})
    ex = hierarchy_examples(preds, 5)
    assert ex[["kind", "index"]].values.tolist() == [["fixed", 0], ["fixed", 2], ["broken", 1]]
    assert hierarchy_examples(preds, 1)["index"].tolist() == [0, 1]


def test_hierarchy_thumbnails_reach_the_report(tmp_path, monkeypatch):
    """Fixed/broken predictions are saved as PNG thumbnails and embedded in the report (no model needed)."""
    import analysis.hierarchy as hierarchy
    from analysis.report import build_report

    if not _wordnet_available():
        pytest.skip("WordNet is not installed (Debian package 'wordnet' or nltk data)")
    real = hierarchy.rerank

    def flipped(*args, **kwargs):  # the tiny random model changes no prediction: make one fixed, one broken
        run = real(*args, **kwargs)
        p = run.predictions
        n_classes = int(p["label"].max()) + 1
        p.loc[0, "pred_before"] = (p.loc[0, "label"] + 1) % n_classes
        p.loc[0, "pred_after"] = p.loc[0, "label"]
        p.loc[1, "pred_before"] = p.loc[1, "label"]
        p.loc[1, "pred_after"] = (p.loc[1, "label"] + 1) % n_classes
        return run

    monkeypatch.setattr(hierarchy, "rerank", flipped)
    dataset = write_audit_manifest(tmp_path / "data")
    cfg = small_audit_config(tmp_path, dataset, name="thumbs")
    for stage in ("zeroshot", "confidence", "concepts", "retrieval"):
        getattr(cfg, stage).enabled = False
    cfg.hierarchy.set = "all"
    result = run_audit(config=cfg)
    rec, tables = read_run(result.results_dir / _status(result, "hierarchy").path)
    ex = tables["examples"]
    assert ex[["kind", "index"]].values.tolist() == [["fixed", 0], ["broken", 1]]
    pngs = [run_file(rec, result.results_dir / _status(result, "hierarchy").path, rel) for rel in ex["thumbnail"]]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in pngs)
    # rebuilt elsewhere from the results folder alone: thumbnails are embedded, captions escaped
    html = build_report(result.results_dir, tmp_path / "rebuilt").read_text()
    assert html.count("data:image/png;base64,") >= 2
    assert "fixed: wrong before, right after" in html and "broken: right before, wrong after" in html


def test_rerun_into_the_same_name_shows_only_the_new_run(tmp_path):
    """A re-run with a task switched off must not show the earlier run's numbers for it (runs.json decides)."""
    dataset = write_audit_manifest(tmp_path / "data")
    cfg = small_audit_config(tmp_path, dataset, name="same")
    cfg.hierarchy.enabled = False
    cfg.retrieval.enabled = False
    first = run_audit(config=cfg)
    assert _status(first, "concepts").status == "ok"
    sections = {s["id"] for s in json.loads((first.report.parent / "report.json").read_text())["sections"]}
    assert "concepts" in sections
    cfg2 = small_audit_config(tmp_path, dataset, name="same")
    cfg2.hierarchy.enabled = cfg2.retrieval.enabled = cfg2.concepts.enabled = False
    second = run_audit(config=cfg2)
    assert second.results_dir == first.results_dir and second.run_id != first.run_id
    report = json.loads((second.report.parent / "report.json").read_text())
    assert "concepts" not in {s["id"] for s in report["sections"]}
    # the earlier concepts result is still on disk (nothing is lost), but not part of this run
    assert list((second.results_dir / "concepts").glob("*.json"))
    manifest = json.loads((second.results_dir / "runs.json").read_text())
    assert manifest["run_id"] == second.run_id and not any(f.startswith("concepts/") for f in manifest["files"])
    for rel in manifest["files"]:
        assert json.loads((second.results_dir / rel).read_text())["run_id"] == second.run_id


def test_nan_checkpoint_fails_clearly_and_reports_no_metric(tmp_path, capsys):
    """A diverged checkpoint (NaN in the image projection) must never pass an audit with numbers."""
    import torch
    from safetensors.torch import save_file

    from analysis.cli import main
    from analysis.models import load_model

    model = load_model("clipaudit-tiny-vit")
    state = {k: v.detach().clone().contiguous() for k, v in model.module.state_dict().items()}
    state["visual.proj"][:] = float("nan")
    ckpt = tmp_path / "diverged.safetensors"
    save_file(state, str(ckpt))
    base = ["audit", "-m", "clipaudit-tiny-vit", "-p", str(ckpt), "--limit", "20", "-q", "--out", str(tmp_path / "r"),
            "--reports-dir", str(tmp_path / "rep"), "--cache-dir", str(tmp_path / "c"), "--no-concepts",
            "--no-hierarchy", "--confidence-n-boot", "10"]
    assert main(base) == 1
    out = capsys.readouterr().out
    assert "non-finite" in out.lower() or "nan" in out.lower()
    assert "acc1" not in out  # no metric is reported for the broken model
    manifest = json.loads(next((tmp_path / "r" / "audit").glob("*/runs.json")).read_text())
    assert not [f for f in manifest["files"] if not f.startswith("audit/")]  # only the audit record, no task result
    # with --skip-bad every image is skipped and listed: still no metric, and the reason says so
    assert main([*base, "--skip-bad", "--name", "skipping"]) == 1
    out = capsys.readouterr().out
    assert "acc1" not in out and "skipped" in out.lower()
    assert torch.isnan(state["visual.proj"]).all()


def test_audit_section_run_facts_come_from_the_identity(audit_run):
    """The audit section's run facts are read from the run identity (weights hash, fingerprint, prompt hash)."""
    result, _, _ = audit_run
    report = json.loads((result.report.parent / "report.json").read_text())
    (section,) = [s for s in report["sections"] if s["id"] == "audit"]
    (facts,) = [b for b in section["runs"][0]["blocks"] if b.get("caption") == "run facts"]
    values = dict(facts["rows"])
    audit_rec, _ = read_run(next((result.results_dir / "audit").glob("*.json")))
    assert values["weights sha256"] == audit_rec["identity"]["model"]["weights_sha256"]
    assert values["dataset fingerprint"] == audit_rec["identity"]["data"]["fingerprint"]
    assert len(values["prompt set sha256"]) == 64
