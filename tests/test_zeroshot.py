"""Zero-shot metrics against a direct numpy computation; the CLI end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main
from analysis.zeroshot import zeroshot_table


def _random_problem(n=300, c=7, d=16, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(c, d))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    labels = rng.integers(0, c, n)
    f = w[labels] + rng.normal(scale=1.2, size=(n, d))
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    return f, w, labels


def test_metrics_match_direct_computation():
    f, w, labels = _random_problem()
    table, metrics, z = zeroshot_table(f, labels, w, scale=50.0, bias=None)
    sims = 50.0 * f @ w.T
    pred = sims.argmax(1)
    assert metrics["acc1"] == pytest.approx(np.mean(pred == labels))
    top5 = np.argsort(-sims, 1)[:, :5]
    assert metrics["acc5"] == pytest.approx(np.mean([labels[i] in top5[i] for i in range(len(labels))]))
    recalls = [np.mean(pred[labels == c] == c) for c in np.unique(labels)]
    assert metrics["mean_per_class_recall"] == pytest.approx(np.mean(recalls))
    assert 0.2 < metrics["acc1"] < 0.95  # a non-trivial problem, so the checks above mean something
    p = np.exp(sims - sims.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(table["max_softmax"], p.max(1), rtol=1e-5)
    np.testing.assert_allclose(table["max_logit"], sims.max(1), rtol=1e-5)
    assert table["top5"].map(len).eq(5).all()


def test_acc5_is_omitted_not_nan_with_few_classes():
    f, w, labels = _random_problem(c=4)
    _, metrics, _ = zeroshot_table(f, labels, w, scale=1.0)
    assert "acc5" not in metrics and set(metrics) == {"acc1", "mean_per_class_recall"}


def test_bias_shifts_logits_not_predictions():
    f, w, labels = _random_problem()
    t0, _, z0 = zeroshot_table(f, labels, w, scale=10.0)
    t1, _, z1 = zeroshot_table(f, labels, w, scale=10.0, bias=-10.0)
    np.testing.assert_allclose(z1, z0 - 10, rtol=1e-5, atol=1e-4)
    assert (t0["pred"] == t1["pred"]).all()


def test_cli_zeroshot_writes_results(image_folder, tmp_path, capsys):
    bad = image_folder / "red_apple" / "corrupt.png"
    bad.write_bytes(b"nope")
    args = ["zeroshot", "--model", "clipaudit-tiny-vit", "--dataset", str(image_folder), "--templates",
            "simple_imagenet", "--out", str(tmp_path / "res"), "--cache-dir", str(tmp_path / "c"), "-q"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "acc1" in out and "mean_per_class_recall" in out and "skipped 1 unreadable" in out
    (run,) = (tmp_path / "res" / "zeroshot_classification").glob("*.json")
    record = json.loads(run.read_text())
    assert {"dataset", "model", "pretrained", "task", "metrics"} <= set(record)
    assert record["task"] == "zeroshot_classification" and record["metrics"]["n_images"] == 12
    assert record["skipped"][0]["item"] == str(bad)
    preds = pd.read_parquet(run.parent / record["tables"]["predictions"][0])
    assert len(preds) == 12 and {"label", "pred", "top3", "max_logit", "max_softmax"} <= set(preds.columns)
    assert record["metrics"]["acc1"] == pytest.approx(preds["correct"].mean())


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["zeroshot", "--model", "ViT-B-99", "--cache-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Unknown model 'ViT-B-99'" in err and "Traceback" not in err
    assert main(["zeroshot", "--model", "clipaudit-tiny-vit", "--dataset", str(tmp_path / "nope"),
                 "--cache-dir", str(tmp_path)]) == 2
    assert "Unknown dataset" in capsys.readouterr().err


def test_precomputed_logits_give_the_same_table():
    """The task passes the shared state's logits; the table must equal the one computed from the embeddings."""
    from analysis.ensemble import logits as compute
    from analysis.zeroshot import zeroshot_table

    rng = np.random.default_rng(4)
    x = rng.normal(size=(30, 8))
    w = rng.normal(size=(6, 8))
    x, w = x / np.linalg.norm(x, axis=1, keepdims=True), w / np.linalg.norm(w, axis=1, keepdims=True)
    y = rng.integers(0, 6, 30)
    a, ma, _ = zeroshot_table(x, y, w, scale=50.0)
    b, mb, _ = zeroshot_table(x, y, w, scale=50.0, logits=compute(x, w, 50.0))
    assert a.equals(b) and ma == mb
    with pytest.raises(Exception, match="expected"):
        zeroshot_table(x, y, w, scale=50.0, logits=np.zeros((30, 5)))
