"""Every reproduction table's code path on the tiny model and generated ImageNet-style trees.

The ImageNet val tree is built so that the tiny model gets some images right: half of the images go in
the folder of the class the model predicts by name, half in another class's folder. Numbers are checked
against direct computations (accuracy, AUROC, set sizes) and against each other (Tab. 3 = Tab. 1 gains,
Tab. 7 at 40% = Tab. 4). The command's flags are checked against the tasks' own (names, meaning), and its
result files against their settings (a run with another --limit writes another file, naming its subset).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from reproduce_trees import direct, ours, repro_setup  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_vit):
    return repro_setup(tmp_path_factory.mktemp("repro"), tiny_vit, {"max_children": 1})


def test_table_options_are_the_tasks_options():
    """Every reproduce option that is a task's option has the task's flag, choices, bounds and parser."""
    import dataclasses

    from analysis.reproduce import GeOptions, MutualKnowledgeOptions
    from analysis.tasks._options import flag_of
    from analysis.tasks.concepts import ConceptsOptions
    from analysis.tasks.hierarchy import HierarchyTaskOptions

    for mine, task in ((MutualKnowledgeOptions, ConceptsOptions), (GeOptions, HierarchyTaskOptions)):
        theirs = {f.name: f for f in dataclasses.fields(task)}
        shared = [f for f in dataclasses.fields(mine) if f.name in theirs]
        assert len(shared) >= 7
        for f in shared:
            t = theirs[f.name]
            assert flag_of(f) == flag_of(t)
            for key in ("choices", "parse", "low", "high", "metavar"):
                assert f.metadata.get(key) == t.metadata.get(key), (f.name, key)


def test_cli_flags_root_classes_and_n_classes(capsys):
    from analysis.cli import build_parser
    from analysis.reproduce import GeOptions, MutualKnowledgeOptions
    from analysis.tasks._common import DataOptions
    from analysis.tasks._options import from_namespace

    parser = build_parser()
    args = parser.parse_args(["reproduce", "sammani2024-mi-auc", "--root", "D", "--classes", "great white shark",
                              "tench", "--n-classes", "3", "--max-children", "all", "--keep-fraction", "1"])
    assert from_namespace(DataOptions(), args).root == "D"
    mk = from_namespace(MutualKnowledgeOptions(), args)
    assert (mk.classes, mk.n_classes) == (["great white shark", "tench"], 3)
    ge = from_namespace(GeOptions(), args)
    assert ge.max_children is None and ge.hierarchy_options().keep_fraction is None  # 1 = no pruning
    assert GeOptions().hierarchy_options().keep_fraction == 0.4
    old = parser.parse_args(["reproduce", "ge2023-tab1", "--data-root", "E"])
    assert from_namespace(DataOptions(), old).root == "E"
    assert "--data-root is deprecated; use --root" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a number is --n-classes now, as in `clipaudit concepts`
        parser.parse_args(["reproduce", "sammani2024-mi-auc", "--concept-classes", "3"])


def test_concept_classes_names_or_first_n():
    from types import SimpleNamespace

    from analysis._checks import ClipauditError
    from analysis.reproduce import MutualKnowledgeOptions
    from analysis.reproduce.sammani2024 import concept_classes

    ds = SimpleNamespace(name="toy", classnames=["cat", "missile", "dog", "missile", "eel", "fox"],
                         labels=np.array([4, 1, 0, 3, 2, 0, 2, -1]))

    def pick(**kw):
        return concept_classes(SimpleNamespace(concepts=MutualKnowledgeOptions(**kw)), ds)

    assert pick() == ["cat", "dog", "eel"]  # present, unique names, class order; "fox" has no image
    assert pick(n_classes=2) == ["cat", "dog"]
    assert pick(classes=["eel", "cat"], n_classes=1) == ["eel", "cat"]  # names win over the number
    with pytest.raises(ClipauditError, match="'dgo' is not a class.*'dog'"):
        pick(classes=["dgo"])
    with pytest.raises(ClipauditError, match="'missile' names 2 classes"):
        pick(classes=["missile"])


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
    for limit in (30, 40):
        rc = main(["reproduce", "demo-fashion-mnist", "-m", "clipaudit-tiny-vit", "--demo-dataset", "bundled",
                   "--limit", str(limit), "-t", "simple_imagenet", "--out", str(out), "--cache-dir",
                   str(tmp / "cache"), "-q"])
        assert rc == 0
        text = capsys.readouterr().out
        assert f"RAN ON A SUBSET (--limit {limit})" in text
    runs = sorted((out / "reproduce").glob("*.json"))
    assert len(runs) == 2  # another --limit never overwrites: each file names its subset
    for path, limit in zip(runs, (30, 40)):
        record = json.loads(path.read_text())
        ident = record["identity"]
        assert ident["data"]["name"].startswith("bundled")
        assert path.name.startswith(f"demo-fashion-mnist__{ident['data']['name']}-subset{limit}__clipaudit-tiny-vit__")
        assert ident["data"]["subset"]["limit"] == limit and ident["data"]["subset"]["n"] <= limit
        assert ident["model"]["weights_sha256"] == ctx.models[0].model.info.weights_sha256
        assert ident["prompts"]["name"] == "simple_imagenet" and ident["options"]["demo"]["demo_dataset"] == "bundled"
        assert record["subset"] is True and f"subset{limit}" in record["markdown"]
    md = (out / "reproduce" / record["markdown"]).read_text()
    assert "RAN ON A SUBSET" in md and "| model |" in md and ident["key"] in md
    assert next((out / "reproduce").glob("*.comparison.csv")).is_file()
    html = build_report(out, tmp / "report").read_text()
    assert "Reproduction of published tables" in html and "RAN ON A SUBSET" in html and "SUBSET:" in html
    assert "Provenance: model clipaudit-tiny-vit" in html
    rc = main(["reproduce", "ge2023-tab1", "-m", "clipaudit-tiny-vit", "--root", str(tmp / "nothing"),
               "--out", str(out), "--cache-dir", str(tmp / "cache"), "-q"])
    assert rc == 2 and "not found" in capsys.readouterr().err
