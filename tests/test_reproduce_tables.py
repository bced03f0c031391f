"""Every reproduction table's code path on the tiny model and generated ImageNet-style trees.

The ImageNet val tree is built so that the tiny model gets some images right: half of the images go in
the folder of the class the model predicts by name, half in another class's folder. Numbers are checked
against direct computations (accuracy, AUROC, set sizes) and against each other (Tab. 3 = Tab. 1 gains,
Tab. 7 at 40% = Tab. 4).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from reproduce_trees import save_images, wnid_tree  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_vit):
    from analysis.cache import EmbeddingCache
    from analysis.data.imagenet_family import imagenet_classnames, imagenet_wnids, subset_wnids
    from analysis.ensemble import ensemble_weights
    from analysis.reproduce import ModelEntry, ReproContext

    tmp = tmp_path_factory.mktemp("repro")
    cache = EmbeddingCache(tmp / "cache", progress=False, batch_size=16)
    name_w = ensemble_weights(cache.class_embeddings(tiny_vit, list(imagenet_classnames()), "name_only"))
    stage = save_images(tmp / "stage", 12, seed=3)
    from PIL import Image

    with torch.no_grad():
        x = torch.stack([tiny_vit.preprocess(Image.open(p).convert("RGB")) for p in stage])
        preds = (tiny_vit.encode_image(x).numpy() @ name_w.T).argmax(1)
    wnids = imagenet_wnids()
    val = tmp / "data" / "imagenet" / "val"
    for i, (p, pred) in enumerate(zip(stage, preds)):
        folder = val / wnids[pred if i % 2 == 0 else (pred + 1 + i) % 1000]
        folder.mkdir(parents=True, exist_ok=True)
        p.rename(folder / p.name)
    wnid_tree(tmp / "data" / "imagenet-r", list(subset_wnids("r")[:2]), per_class=2)
    (tmp / "two.txt").write_text("a photo of a {}.\na drawing of the {}.\n")
    (tmp / "desc.json").write_text('{"x": ["red fur", "a long tail", "scales", "a fin", "wheels", "a handle", '
                                   '"stripes", "a beak"]}')
    ctx = ReproContext([ModelEntry(tiny_vit, "ViT-B/16")], cache, data_root=str(tmp / "data"),
                       templates=str(tmp / "two.txt"),
                       options={"hierarchy": {"max_children": 1}, "descriptors": str(tmp / "desc.json"),
                                "concept_classes": 2, "images_per_class": 3, "demo_dataset": "bundled"})
    return ctx, tmp


def ours(result, **key):
    df = result.comparison
    for k, v in key.items():
        df = df[df[k] == v]
    assert len(df) == 1, (key, df)
    return df.iloc[0]


def direct(ctx, dataset, templates):
    """Accuracy of the ensemble of ``templates`` computed here from the cache (not via the pipelines)."""
    from analysis.ensemble import ensemble_weights

    model = ctx.models[0].model
    ds = ctx.dataset(dataset)
    feats = ctx.cache.image_features(model, ds).features
    w = ensemble_weights(ctx.cache.class_embeddings(model, ds.classnames, templates))
    return feats @ w.T, np.asarray(ds.labels)


def test_radford_and_sammani_tables(setup):
    from analysis.reproduce import run_table

    ctx, _ = setup
    rad = run_table("radford2021-imagenet", ctx)
    scores, labels = direct(ctx, "imagenet-val", "photo")
    assert ours(rad, row="top-1", column="a photo of a {}.")["ours"] == pytest.approx(
        100 * np.mean(scores.argmax(1) == labels))
    # the tiny model matches no paper backbone: its rows have no published value; the paper's rows are appended
    mine = rad.comparison[rad.comparison["model"] != "(not run)"]
    assert mine["published"].isna().all()
    paper = rad.comparison[rad.comparison["model"] == "(not run)"].set_index("paper_model")["published"]
    assert paper.to_dict() == {"RN50": 59.6, "ViT-B/32": 63.2, "ViT-L/14@336": 76.2}

    desc = run_table("sammani2024-descriptors", ctx)
    row = {c: ours(desc, column=c, model=ctx.models[0].name)["ours"]
           for c in ("base prompts", "with descriptors", "gain")}
    assert row["gain"] == pytest.approx(row["with descriptors"] - row["base prompts"])
    mi = run_table("sammani2024-mi-auc", ctx)
    got = mi.comparison[mi.comparison["model"] == ctx.models[0].name].set_index("column")["ours"]
    assert {"top-1", "MI (PCA)", "AUC (PCA)", "MI (K-means)", "AUC (K-means)"} <= set(got.index)
    assert (got.drop("top-1") >= 0).all()


def test_cli_list_run_with_limit_and_report(setup, capsys):
    from analysis.cli import main
    from analysis.report import build_report

    ctx, tmp = setup
    assert main(["reproduce", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "ge2023-tab1" in listing and "demo-fashion-mnist" in listing
    out = tmp / "results"
    rc = main(["reproduce", "demo-fashion-mnist", "-m", "clipaudit-tiny-vit", "--demo-dataset", "bundled",
               "--limit", "30", "-t", "simple_imagenet", "--results-dir", str(out), "--cache-dir",
               str(tmp / "cache"), "-q"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "RAN ON A SUBSET (--limit 30)" in text
    md = next((out / "reproduce").glob("*.md")).read_text()
    assert "RAN ON A SUBSET" in md and "| model |" in md
    assert next((out / "reproduce").glob("*.comparison.csv")).is_file()
    html = build_report(out, tmp / "report").read_text()
    assert "Reproduction of published tables" in html and "RAN ON A SUBSET" in html
    rc = main(["reproduce", "ge2023-tab1", "-m", "clipaudit-tiny-vit", "--data-root", str(tmp / "nothing"),
               "--results-dir", str(out), "--cache-dir", str(tmp / "cache"), "-q"])
    assert rc == 2 and "not found" in capsys.readouterr().err
