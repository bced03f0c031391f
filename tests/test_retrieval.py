"""Retrieval recall@k against a brute-force loop, with several captions per image."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.cli import main
from analysis.retrieval import retrieval_scores


def _brute_force(img, txt, owner, k):
    sim = img @ txt.T
    i2t = np.mean([
        any(owner[j] == i for j in np.argsort(-sim[i], kind="stable")[:k]) for i in range(len(img))
    ])
    t2i = np.mean([owner[t] in np.argsort(-sim[:, t], kind="stable")[:k] for t in range(len(txt))])
    return i2t, t2i


def test_recall_matches_brute_force():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(30, 8))
    owner = np.repeat(np.arange(30), rng.integers(1, 4, 30))  # 1-3 captions per image
    txt = img[owner] + rng.normal(scale=1.5, size=(len(owner), 8))
    metrics, per_query = retrieval_scores(img, txt, owner, ks=(1, 5, 10))
    for k in (1, 5, 10):
        i2t, t2i = _brute_force(img, txt, owner, k)
        assert metrics[f"image_to_text_recall@{k}"] == pytest.approx(i2t)
        assert metrics[f"text_to_image_recall@{k}"] == pytest.approx(t2i)
    assert 0 < metrics["image_to_text_recall@1"] < 1
    assert len(per_query) == 30 + len(owner)


def test_each_direction_keeps_every_k_up_to_its_own_candidates():
    rng = np.random.default_rng(1)
    img = rng.normal(size=(8, 6))
    owner = np.repeat(np.arange(8), 5)  # 8 images x 40 captions
    txt = img[owner] + rng.normal(scale=2.0, size=(40, 6))
    metrics, _ = retrieval_scores(img, txt, owner, ks=(1, 5, 8, 9, 10, 40, 41))
    # image->text ranks 40 captions: every k <= 40; text->image ranks 8 images: every k <= 8
    assert sorted(int(k.split("@")[1]) for k in metrics if k.startswith("image_to_text")) == [1, 5, 8, 9, 10, 40]
    assert sorted(int(k.split("@")[1]) for k in metrics if k.startswith("text_to_image")) == [1, 5, 8]
    for k in (1, 5, 8, 9, 10, 40):
        i2t, t2i = _brute_force(img, txt, owner, k)
        assert metrics[f"image_to_text_recall@{k}"] == pytest.approx(i2t)
        if k <= 8:
            assert metrics[f"text_to_image_recall@{k}"] == pytest.approx(t2i)
    assert 0 < metrics["image_to_text_recall@1"] < 1 and 0 < metrics["text_to_image_recall@1"] < 1


def test_report_marks_the_omitted_k():
    from analysis.report.sections import retrieval_section

    rng = np.random.default_rng(2)
    img = rng.normal(size=(8, 6))
    owner = np.repeat(np.arange(8), 5)
    metrics, per_query = retrieval_scores(img, img[owner], owner)
    metrics |= {"n_images": 8, "n_texts": 40}
    _, table = retrieval_section({"metrics": metrics}, {"per_query": per_query}, None)
    rows = {r[0]: r[1:] for r in table["rows"]}
    assert rows[10] == [f"{metrics['image_to_text_recall@10']:.4f}", "n/a (only 8 candidates)"]
    assert rows[5][1] == f"{metrics['text_to_image_recall@5']:.4f}"


def test_cli_retrieval(image_folder, tmp_path, capsys):
    files = sorted(image_folder.rglob("*.png"))
    rows = ["path,caption"] + [f"{p},a photo of {p.parent.name.replace('_', ' ')} {i}" for i, p in enumerate(files)]
    (tmp_path / "caps.csv").write_text("\n".join(rows))
    assert main(["retrieval", "--model", "clipaudit-tiny-vit", "--dataset", str(tmp_path / "caps.csv"),
                 "--out", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "image_to_text_recall@1" in out and "text_to_image_recall@10" in out
    assert main(["retrieval", "--model", "clipaudit-tiny-vit", "--dataset", str(image_folder),
                 "--cache-dir", str(tmp_path / "c"), "-q"]) == 2
    assert "no captions" in capsys.readouterr().err
