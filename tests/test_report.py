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
from conftest import EVIL_CLASS

from analysis.report import build_report
from analysis.results import write_run

EVIL = EVIL_CLASS


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


def test_audit_report_new_sections_are_self_contained_and_escaped(audit_run):
    result, *_ = audit_run
    html = result.report.read_text()
    parser = _Collect()
    parser.feed(html)
    assert parser.scripts == 0
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and EVIL not in html
    assert all(s.startswith(("data:", "#")) for s in parser.srcs), "no external resources"
    assert not re.search(r"https?://", html)
    for title in ("Audit: stages and run facts", "Zero-shot accuracy", "Confidence (self-consistency)",
                  "Concepts (mutual knowledge)", "Retrieval"):
        assert title in html
    sidecar = json.loads((result.report.parent / "report.json").read_text())
    assert "uri" not in json.dumps(sidecar)
    sections = {s["id"]: s for s in sidecar["sections"]}
    conf_blocks = sections["confidence"]["runs"][0]["blocks"]
    captions = [b.get("caption", "") for b in conf_blocks]
    for needle in ("ROC", "risk–coverage", "reliability", "in-sample thresholds",
                   "most often low-confidence", "correct vs wrong"):
        assert any(needle in c for c in captions), needle
    # the sidecar keeps the plotted numbers: the ROC of S_T is sklearn's on the saved per-image table
    from sklearn.metrics import roc_curve

    from analysis.results import read_run

    conf_path = next((result.results_dir / "confidence").glob("*.json"))
    _, tables = read_run(conf_path)
    ps = tables["per_sample"]
    fpr, tpr, _ = roc_curve(ps["correct_name_only"].astype(bool), ps["S_T"])
    roc = next(b for b in conf_blocks if b.get("caption", "").startswith("ROC"))
    if "S_T" in roc["data"]:
        assert np.allclose(roc["data"]["S_T"]["fpr"], fpr) and np.allclose(roc["data"]["S_T"]["tpr"], tpr)
    concepts = sections["concepts"]["runs"][0]["blocks"]
    assert [b["caption"] for b in concepts if b["kind"] == "images"] == ["apple", EVIL]
    if "hierarchy_rerank" in sections:
        blocks = sections["hierarchy_rerank"]["runs"][0]["blocks"]
        table1 = next(b for b in blocks if b["kind"] == "table" and "Table 1" in b["caption"])
        assert [r[0] for r in table1["rows"]] == ["full set", "low confidence (O)", "rest"]
        thumbs = [im for b in blocks if b["kind"] == "images" for im in b["images"]]
        hier, _ = read_run(next((result.results_dir / "hierarchy_rerank").glob("*.json")))
        m = hier["metrics"]
        n_examples = result.config.hierarchy.examples
        # every fixed / broken example (up to the configured number each) is shown with its thumbnail
        assert len(thumbs) == min(n_examples, m["n_fixed"]) + min(n_examples, m["n_broken"])


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
#: Hosts Chromium itself contacts (updates, sign-in, time); requests to them are not the page's.
_BROWSER_HOSTS = ("google.com", "googleapis.com", "gvt1.com", "gstatic.com", "googleusercontent.com")


def _chromium(url: str, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=1"]
    return subprocess.run([CHROMIUM, *flags, *extra, url], capture_output=True, text=True, timeout=120)


def _console_messages(stderr: str) -> list[str]:
    """Every console message of the page (Chromium logs them as ``INFO:CONSOLE:<line>]`` at --v=1)."""
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _page_requests(stderr: str) -> list[str]:
    """URLs requested over the network, minus Chromium's own background services."""
    urls = re.findall(r"NotifyBeforeURLRequest: (\S+)", stderr)
    return [u for u in urls if u.startswith(("http:", "https:", "ws:", "wss:", "ftp:"))
            and not any(re.match(rf"^\w+://([^/]*\.)?{re.escape(h)}(:\d+)?/", u) for h in _BROWSER_HOSTS)]


def _check_rendered(html_path, tmp_path, must_contain: list[str]) -> None:
    html = html_path.read_text()
    assert not re.search(r"https?://", html)
    dom = _chromium(html_path.as_uri(), tmp_path, "--dump-dom")
    for text in must_contain:
        assert text in dom.stdout, text
    assert "<script>alert(1)</script>" not in dom.stdout and "&lt;script&gt;" in dom.stdout
    assert _console_messages(dom.stderr) == []  # no errors, CSP violations or logs
    assert _page_requests(dom.stderr) == []
    assert not re.search(r"net::ERR\S*.*file://", dom.stderr)
    assert dom.stdout.count("<img") >= 2
    shot = tmp_path / f"{html_path.parent.name}.png"
    _chromium(html_path.as_uri(), tmp_path, "--window-size=1200,1600", f"--screenshot={shot}")
    assert shot.is_file() and shot.stat().st_size > 10_000


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None,
                    reason="Chromium is not installed (Debian package 'chromium'; install.sh installs it)")
def test_report_renders_in_headless_chromium(tmp_path, audit_run):
    # the checks can fail: a page that logs to the console and fetches over the network is caught
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><script>console.error("boom-console")</script>'
                   '<img src="http://example.invalid/x.png"></body></html>')
    run = _chromium(bad.as_uri(), tmp_path, "--dump-dom")
    assert any("boom-console" in line for line in _console_messages(run.stderr))
    assert any("example.invalid" in u for u in _page_requests(run.stderr))

    res, *_ = _fake_zeroshot_results(tmp_path)
    _check_rendered(build_report(res, tmp_path / "rep"), tmp_path, ["Zero-shot accuracy"])
    result, *_ = audit_run
    _check_rendered(result.report, tmp_path, ["Confidence (self-consistency)", "Concepts (mutual knowledge)",
                                              "Audit: stages and run facts"])
