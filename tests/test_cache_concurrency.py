"""Several processes on one cache: simultaneous extractions and simultaneous audits give one run's results."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from analysis._atomic import atomic_write_text
from analysis.cache import EmbeddingCache
from analysis.cache.admin import verify_cache
from analysis.data import create_dataset

VIEWS = ["none", "hflip"]
TEXTS = [f"a photo of thing number {i}" for i in range(60)]
ROUNDS = [{"0": 0.0, "1": 0.0}, {"0": 0.0, "1": 0.05}, {"0": 0.1, "1": 0.0}]  # start offsets (s) per round

# A child loads the model once, then runs one extraction per round, each starting when the test says go.
CHILD = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from analysis._atomic import atomic_write_text
from analysis.cache import EmbeddingCache
from analysis.data import create_dataset
from analysis.models import load_model

work, me, rounds, folder = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
texts = [f"a photo of thing number {i}" for i in range(60)]
model = load_model("clipaudit-tiny-vit")
datasets = {"bundled": create_dataset("bundled", limit=40), "small": create_dataset(folder)}
(work / f"ready-{me}").touch()
for r in range(rounds):
    go = work / f"go-{r}"
    while not go.exists():
        time.sleep(0.005)
    time.sleep(json.loads(go.read_text())[me])
    cache = EmbeddingCache(work / f"cache-{r}", progress=False, chunk_size=8, batch_size=4)
    out = {}
    for name, ds in datasets.items():
        for view, feats in cache.image_views(model, ds, ["none", "hflip"]).items():
            out[f"{name}-{view}"], out[f"{name}-{view}-valid"] = feats.features, feats.valid
    out["text"] = cache.text_features(model, texts)
    np.savez(work / f"out-{r}-{me}.npz", **out)
    stats = {"images": cache.stats.images_encoded, "texts": cache.stats.texts_encoded, "healed": cache.stats.healed}
    atomic_write_text(work / f"done-{r}-{me}.json", json.dumps(stats))  # never seen half-written
"""


def _wait_for(paths, procs, what, limit=180.0):
    """Wait until every path exists; fail with the children's stderr if one exits first."""
    start = time.monotonic()
    while not all(p.exists() for p in paths):
        for proc, err in procs:
            if proc.poll() is not None and not all(p.exists() for p in paths):
                pytest.fail(f"a child exited ({proc.returncode}) before {what}:\n{Path(err).read_text()[-3000:]}")
        if time.monotonic() - start > limit:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.fixture()
def children():
    procs = []
    yield procs
    for proc, _ in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _reference(model, folder, path):
    cache = EmbeddingCache(path, progress=False, chunk_size=8, batch_size=4)
    out = {}
    for name, ds in (("bundled", create_dataset("bundled", limit=40)), ("small", create_dataset(str(folder)))):
        for view, feats in cache.image_views(model, ds, VIEWS).items():
            out[f"{name}-{view}"], out[f"{name}-{view}-valid"] = feats.features, feats.valid
    out["text"] = cache.text_features(model, TEXTS)
    return out, cache.stats


def test_two_processes_extracting_at_once_match_a_single_run(tiny_vit, image_folder, tmp_path, children):
    work = tmp_path / "work"
    work.mkdir()
    ref, ref_stats = _reference(tiny_vit, image_folder, tmp_path / "single")
    for me in ("0", "1"):
        err = work / f"stderr-{me}.txt"
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(work), me, str(len(ROUNDS)), str(image_folder)],
                                stdout=subprocess.DEVNULL, stderr=open(err, "w"))
        children.append((proc, err))
    _wait_for([work / "ready-0", work / "ready-1"], children, "the children loaded the model")
    for r, offsets in enumerate(ROUNDS):
        atomic_write_text(work / f"go-{r}", json.dumps(offsets))  # both start together (give or take the offsets)
        done = [work / f"done-{r}-{me}.json" for me in ("0", "1")]
        _wait_for(done, children, f"round {r}")
        for me in ("0", "1"):
            got = np.load(work / f"out-{r}-{me}.npz")
            assert set(got.files) == set(ref)
            for key, want in ref.items():
                np.testing.assert_array_equal(got[key], want, err_msg=f"round {r}, process {me}, {key}")
        stats = [json.loads(p.read_text()) for p in done]
        # the rows are computed once: the second process waits for the first and reads its rows
        assert sum(s["images"] for s in stats) == ref_stats.images_encoded == 2 * (40 + 12)
        assert sum(s["texts"] for s in stats) == ref_stats.texts_encoded == len(TEXTS)
        assert sum(s["healed"] for s in stats) == 0
        cache = work / f"cache-{r}"
        assert not list(cache.rglob("*.tmp"))
        reports = verify_cache(cache)
        assert reports and all(rep.status in ("complete", "partial") and not rep.problems for rep in reports)
    for proc, err in children:
        assert proc.wait(timeout=60) == 0, Path(err).read_text()[-3000:]


def _metrics(out: Path, name: str) -> dict[str, dict]:
    found = {}
    for task in ("zeroshot_classification", "confidence"):
        (path,) = (out / "audit" / name / task).glob("*.json")
        found[task] = json.loads(path.read_text())["metrics"]
    return found


def test_concurrent_audits_on_one_cache_agree(tmp_path, children):
    """Three audits at once on one cache: two into the same --name, one into another; all succeed alike."""
    common = ["-m", "clipaudit-tiny-vit", "--limit", "40", "--no-concepts", "--no-hierarchy",
              "--confidence-n-boot", "20", "-q", "--cache-dir", str(tmp_path / "cache"),
              "--out", str(tmp_path / "results"), "--reports-dir", str(tmp_path / "reports")]
    names = ["same", "same", "other"]
    for i, name in enumerate(names):
        err = tmp_path / f"stderr-{i}.txt"
        proc = subprocess.Popen([sys.executable, "-m", "analysis", "audit", *common, "--name", name],
                                stdout=subprocess.DEVNULL, stderr=open(err, "w"), cwd=tmp_path)
        children.append((proc, err))
    for proc, err in children:
        code = proc.wait(timeout=300)
        text = Path(err).read_text()
        assert code == 0, text[-3000:]
        assert "Traceback" not in text
    same, other = _metrics(tmp_path / "results", "same"), _metrics(tmp_path / "results", "other")
    assert same == other
    assert same["zeroshot_classification"]["n_images"] == 40
    for name in ("same", "other"):
        assert (tmp_path / "reports" / name / "index.html").is_file()
    assert not list(tmp_path.rglob("*.tmp"))
    assert all(not rep.problems for rep in verify_cache(tmp_path / "cache"))
