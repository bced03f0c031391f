"""HTML report: self-contained, escaped, rebuilt from result files alone; a real-browser check."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from analysis.report import build_report
from analysis.results import write_run

EVIL = "<script>alert(1)</script>"


def _fake_zeroshot_results(tmp_path):
    rng = np.random.default_rng(0)
    classes = ["cat", EVIL, "dog & co"]
    labels = rng.integers(0, 3, 60)
    pred = np.where(rng.random(60) < 0.7, labels, rng.integers(0, 3, 60))
    preds = pd.DataFrame({"index": np.arange(60), "label": labels, "pred": pred, "correct": labels == pred,
                          "top3": [[int(p), 0, 1] for p in pred], "max_logit": rng.random(60),
                          "max_softmax": rng.random(60)})
    metrics = {"acc1": float(np.mean(labels == pred)), "mean_per_class_recall": 0.5, "n_images": 60}
    write_run(tmp_path / "res", task="zeroshot_classification", dataset="toy", model=EVIL, pretrained=None,
              metrics=metrics, tables={"predictions": preds},
              extra={"classnames": classes, "templates": "photo", "n_templates": 1, "logit_scale": 100.0,
                     "logit_bias": None, "model_info": {"weights_sha256": "ab" * 32}})
    return tmp_path / "res", metrics, labels, pred


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.srcs, self.imgs = 0, [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.imgs += 1
        for key in ("src", "href"):
            if attrs.get(key):
                self.srcs.append(attrs[key])


def test_report_is_self_contained_and_escaped(tmp_path):
    res, metrics, labels, pred = _fake_zeroshot_results(tmp_path)
    html_path = build_report(res, tmp_path / "rep")
    html = html_path.read_text()
    parser = _Collect()
    parser.feed(html)
    assert parser.scripts == 0  # the class name and model name never become markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert all(s.startswith(("data:", "#")) for s in parser.srcs), "no external resources"
    assert not re.search(r"https?://", html)
    assert parser.imgs >= 2  # per-class accuracy and confusion matrix
    sidecar = json.loads((tmp_path / "rep" / "report.json").read_text())
    (section,) = sidecar["sections"]
    blocks = section["runs"][0]["blocks"]
    assert blocks[0]["items"][0] == ["acc1", f"{metrics['acc1']:.4f}"]
    confusion = next(b for b in blocks if b["kind"] == "figure" and "confusion" in b["caption"])
    cm = np.zeros((3, 3), int)
    np.add.at(cm, (labels, pred), 1)
    assert confusion["data"]["counts"] == cm.tolist()
    assert "uri" not in json.dumps(sidecar)


def test_report_cli_rebuilds_without_model(tmp_path, capsys):
    from analysis.cli import main

    res, *_ = _fake_zeroshot_results(tmp_path)
    assert main(["report", str(res), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "index.html").is_file()
    assert main(["report", str(tmp_path / "empty")]) == 2


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package 'chromium'; install.sh installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    res, *_ = _fake_zeroshot_results(tmp_path)
    html_path = build_report(res, tmp_path / "rep")
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", html_path.as_uri()], capture_output=True, text=True,
                         timeout=120)
    assert "Zero-shot accuracy" in dom.stdout
    assert "<script>alert(1)</script>" not in dom.stdout and "&lt;script&gt;" in dom.stdout
    assert "Uncaught" not in dom.stderr and "CONSOLE" not in dom.stderr.upper().replace("CONSOLE(0)", "")
    # no network: the page has a CSP that forbids every fetch except data: images; list requests made
    assert "net::ERR" not in dom.stderr
    subprocess.run([CHROMIUM, *flags, "--window-size=1200,1600", f"--screenshot={shot}", html_path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
