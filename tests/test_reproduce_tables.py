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

sys.path.insert(0, str(Path(__file__).parent))
from reproduce_trees import direct, ours, repro_setup  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_vit):
    return repro_setup(tmp_path_factory.mktemp("repro"), tiny_vit, {"max_children": 1})





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
