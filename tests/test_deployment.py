"""The deployment audit: chosen on calibration images, reported on held-out ones, replayed exactly by the policy."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from analysis.cli import main
from analysis.results import read_run


def _record(capsys) -> dict:
    out = capsys.readouterr().out
    path = next(line.split("results: ", 1)[1] for line in out.splitlines() if line.startswith("results: "))
    return json.loads(open(path).read()), out, path


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """One deployment run of the tiny model with a reachable target, and its policy file."""
    import contextlib
    import io

    tmp = tmp_path_factory.mktemp("deploy")
    argv = ["deployment", "-m", "clipaudit-tiny-rn", "--limit", "200", "--cache-dir", str(tmp / "c"),
            "--out", str(tmp / "r"), "-q", "--templates", "simple_imagenet", "--target-accuracy", "0.05",
            "--delta", "0.2", "--alpha", "0.2", "--shift-dataset", "bundled"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    out = buf.getvalue()
    path = next(line.split("results: ", 1)[1] for line in out.splitlines() if line.startswith("results: "))
    record, tables = read_run(path)
    record["tables_read"] = tables
    policy = next((tmp / "r" / "deployment").glob("*.files/deployment_policy.json"))
    return record, out, policy, tmp


def test_choices_are_made_on_calibration_and_reported_on_held_out(deployed):
    record, out, policy_path, _ = deployed
    v = record["verdict"]
    assert v["score"] is not None and v["n_cal"] == v["n_test"] == 100
    assert "deploy '" in out and "held-out" in out
    thr = {r["score"]: r for r in record["tables_read"]["thresholds"].to_dict("records")}
    best = thr[v["score"]]
    # the recommended score is the guaranteed one with the largest calibration coverage (never chosen on test)
    guaranteed = [r for r in thr.values() if r["achievable"]]
    assert best["cal_coverage"] == max(r["cal_coverage"] for r in guaranteed)
    policy = json.loads(policy_path.read_text())
    assert policy["threshold"] == pytest.approx(v["threshold"]) and policy["score"]["name"] == v["score"]
    assert policy["model"]["weights_sha256"] == record["identity"]["model"]["weights_sha256"]
    assert record["shift"]["sentence"].startswith("Under shift to bundled-fashion-mnist")


def test_report_opens_with_the_verdict_and_shows_no_nan(deployed, tmp_path):
    from analysis.report import build_report

    _, _, _, tmp = deployed
    html = build_report(tmp / "r", tmp_path / "rep").read_text()
    assert html.index('class="verdict"') < html.index("Run facts")
    assert "deploy &#39;" in html or "deploy '" in html
    cells = re.findall(r"<td>([^<]*)</td>", html) + re.findall(r'<div class="metric"><b>([^<]*)</b>', html)
    assert cells and not [c for c in cells if c.strip().lower() in ("nan", "inf", "-inf", "none")]
    assert "<dl class=\"glossary\">" in html and "selective accuracy" in html


def test_apply_on_the_held_out_half_reproduces_the_reported_numbers(deployed, capsys):
    record, _, policy, tmp = deployed
    assert main(["apply", str(policy), "--held-out", "--cache-dir", str(tmp / "c"), "--out", str(tmp / "a"),
                 "-q"]) == 0
    applied, out, _ = _record(capsys)
    v = record["verdict"]
    assert applied["metrics"]["n_images"] == v["n_test"]
    assert applied["metrics"]["coverage"] == pytest.approx(v["test_coverage"], abs=0)
    assert applied["metrics"]["accuracy"] == pytest.approx(v["test_accuracy"], abs=0)
    assert applied["metrics"]["set_coverage"] == pytest.approx(record["conformal"]["test_coverage"], abs=0)
    assert re.search(r"kept \d+ of 100 images", out)


def test_apply_refuses_another_model(deployed, tmp_path, capsys):
    _, _, policy, tmp = deployed
    data = json.loads(policy.read_text())
    data["model"]["weights_sha256"] = "0" * 64
    bad = tmp_path / "policy.json"
    bad.write_text(json.dumps(data))
    assert main(["apply", str(bad), "--cache-dir", str(tmp / "c"), "--out", str(tmp_path / "a"), "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not the ones this policy was calibrated on" in err[0]


def test_unreachable_target_says_so_in_words(tmp_path, capsys):
    argv = ["deployment", "-m", "clipaudit-tiny-rn", "--limit", "100", "--cache-dir", str(tmp_path / "c"),
            "--out", str(tmp_path / "r"), "-q", "--templates", "simple_imagenet", "--target-accuracy", "0.999"]
    assert main(argv) == 0
    record, out, _ = _record(capsys)
    assert record["verdict"]["score"] is None and "no confidence score can guarantee" in out
    assert record["policy"]["threshold"] is None
    assert "nan" not in out.lower().replace("name", "") and "inf" not in out.lower().replace("info", "")


def test_calibration_split_is_stratified_and_disjoint():
    from analysis.tasks.deployment import calibration_split

    labels = np.repeat(np.arange(5), 40)
    cal, test = calibration_split(labels, 0.5, 0)
    assert not set(cal) & set(test) and len(cal) + len(test) == 200
    assert np.bincount(labels[cal]).tolist() == [20] * 5
    again, _ = calibration_split(labels, 0.5, 0)
    assert again.tolist() == cal.tolist()


def test_separate_calibration_dataset(tmp_path, capsys):
    """--calibration-dataset: calibrate on one dataset, report on every image of the other; never the same data."""
    common = ["-m", "clipaudit-tiny-rn", "--cache-dir", str(tmp_path / "c"), "--out", str(tmp_path / "r"), "-q",
              "--templates", "simple_imagenet", "--target-accuracy", "0.05", "--delta", "0.2"]
    from conftest import make_image

    from analysis.data import FASHION_MNIST_CLASSES

    rng = np.random.default_rng(3)
    root = tmp_path / "cal"
    for k, name in enumerate(FASHION_MNIST_CLASSES):
        (root / f"c{k}").mkdir(parents=True)
        for i in range(3):
            make_image(rng, (20 * k, 100, 250 - 20 * k), size=28).save(root / f"c{k}" / f"{i}.png")
    (root / "classnames.txt").write_text("\n".join(FASHION_MNIST_CLASSES) + "\n")
    assert main(["deployment", "--limit", "40", "--calibration-dataset", str(root), *common]) == 0
    record, _, _ = _record(capsys)
    assert record["verdict"]["n_test"] == 40 and record["verdict"]["n_cal"] == 30
    assert record["policy"]["calibration"]["separate_dataset"] is True
    assert record["policy"]["calibration"]["data"]["name"] == "cal"
    # a subset of the very images it would calibrate on is refused
    assert main(["deployment", "--limit", "40", "--calibration-dataset", "bundled", *common]) == 2
    assert "overlaps the evaluation data" in capsys.readouterr().err


@pytest.mark.browser
def test_verdict_renders_first_in_headless_chromium(deployed, tmp_path):
    """In a real browser: the verdict block is there, before the evidence, and no cell reads nan/inf."""
    from test_report import CHROMIUM, _chromium

    from analysis.report import build_report

    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package 'chromium'; install.sh installs it)")
    _, _, _, tmp = deployed
    page = build_report(tmp / "r", tmp_path / "rep")
    dom = _chromium(page.as_uri(), tmp_path, "--dump-dom").stdout
    assert '<div class="verdict">' in dom and dom.index('class="verdict"') < dom.index('id="facts"')
    cells = re.findall(r"<td>([^<]*)</td>", dom)
    assert cells and not [c for c in cells if c.strip().lower() in ("nan", "inf", "-inf")]
    shot = tmp_path / "verdict.png"
    _chromium(page.as_uri(), tmp_path, "--window-size=1200,1600", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000
