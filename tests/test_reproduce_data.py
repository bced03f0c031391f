"""ImageNet-family loaders on generated trees, the published-numbers file, and the subset flag (fast)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis._checks import ClipauditError
from analysis.data import create_dataset
from analysis.data.imagenet_family import (
    imagenet_a,
    imagenet_r,
    imagenet_sketch,
    imagenet_v2,
    imagenet_val,
    imagenet_wnids,
    subset_indices,
    subset_wnids,
)

sys.path.insert(0, str(Path(__file__).parent))
from reproduce_trees import VAL_WNIDS, save_images, wnid_tree  # noqa: E402


def timm_lines(name: str) -> list[str]:
    import timm

    return (Path(timm.__file__).parent / "data" / "_info" / name).read_text().split()


def test_class_lists_match_timm_files_and_open_clip():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    assert list(imagenet_wnids()) == timm_lines("imagenet_synsets.txt")
    assert len(IMAGENET_CLASSNAMES) == 1000
    for which in ("r", "a"):
        wnids, idx = subset_wnids(which), subset_indices(which)
        assert len(wnids) == len(idx) == 200
        # the index file points at the same wnids in the 1000-class list
        assert [imagenet_wnids()[i] for i in idx] == list(wnids)


def test_val_wnid_folders_sorted_order(tmp_path):
    wnid_tree(tmp_path / "imagenet" / "val", ["n01484850", "n01440764"], per_class=2)
    ds = create_dataset("imagenet-val", root=str(tmp_path))  # found under imagenet/val
    assert ds.name == "imagenet-val" and len(ds.classnames) == 1000
    expected = timm_lines("imagenet_synsets.txt")
    assert sorted(set(ds.labels.tolist())) == [expected.index("n01440764"), expected.index("n01484850")]
    assert Path(ds.describe(0)).parent.name == "n01440764"


def write_meta_mat(path: Path, id_to_wnid: dict[int, str]) -> None:
    from scipy.io import savemat

    dt = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")]
    arr = np.array([(np.uint16(i), w, np.uint16(0)) for i, w in id_to_wnid.items()], dtype=dt)
    savemat(str(path), {"synsets": arr})


def test_val_flat_folder_with_devkit_maps_ids_through_meta_mat(tmp_path):
    folder = tmp_path / "ILSVRC2012_img_val"
    for n in range(1, 5):  # save_images names files PREFIX_0000.JPEG: rename to the release's pattern
        save_images(folder, 1, seed=n, prefix="tmp")
        (folder / "tmp_0000.JPEG").rename(folder / f"ILSVRC2012_val_{n:08d}.JPEG")
    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    # devkit IDs are not the sorted order: ID 1 is kit fox (sorted index 278), ID 3 is tench (sorted 0)
    ids = {1: "n02119789", 2: "n02100735", 3: "n01440764"}
    write_meta_mat(devkit / "meta.mat", ids)
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("3\n1\n2\n1\n")
    ds = imagenet_val(str(tmp_path))
    wnids = timm_lines("imagenet_synsets.txt")
    expected = [wnids.index(ids[i]) for i in (3, 1, 2, 1)]
    assert ds.labels.tolist() == expected
    assert expected != [i - 1 for i in (3, 1, 2, 1)]  # the naive ID-1 reading would be wrong
    assert "devkit" in ds.label_source


def test_val_flat_folder_with_simple_labels_file(tmp_path):
    folder = tmp_path / "val"
    for n in (1, 2):
        save_images(folder, 1, seed=n, prefix="tmp")
        (folder / "tmp_0000.JPEG").rename(folder / f"ILSVRC2012_val_{n:08d}.JPEG")
    (folder / "val_labels.txt").write_text("ILSVRC2012_val_00000001.JPEG n01443537\nILSVRC2012_val_00000002 5\n")
    ds = imagenet_val(str(folder))
    assert ds.labels.tolist() == [timm_lines("imagenet_synsets.txt").index("n01443537"), 5]


def test_val_flat_folder_without_labels_names_where_it_looked(tmp_path):
    folder = tmp_path / "val"
    save_images(folder, 1, seed=0, prefix="tmp")
    (folder / "tmp_0000.JPEG").rename(folder / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(ClipauditError, match="ILSVRC2012_validation_ground_truth.txt.*Looked in"):
        imagenet_val(str(folder))


def test_imagenet_v2_class_index_folders(tmp_path):
    root = tmp_path / "imagenetv2-matched-frequency-format-val"
    for k in ("0", "7", "999"):
        save_images(root / k, 2, seed=int(k))
    ds = imagenet_v2(str(tmp_path))
    assert sorted(set(ds.labels.tolist())) == [0, 7, 999] and len(ds) == 6
    with pytest.raises(ClipauditError, match="threshold0.7"):
        imagenet_v2(str(tmp_path), split="threshold0.7")  # the other variant is not there: names the folder


def test_sketch_wnid_folders(tmp_path):
    wnid_tree(tmp_path / "sketch", VAL_WNIDS, per_class=1)
    ds = imagenet_sketch(str(tmp_path))
    assert ds.labels.tolist() == [imagenet_wnids().index(w) for w in VAL_WNIDS]


@pytest.mark.parametrize("which,loader", [("r", imagenet_r), ("a", imagenet_a)])
def test_r_and_a_1000_way_and_200_way(tmp_path, which, loader):
    picked = [subset_wnids(which)[k] for k in (0, 5, 199)]
    wnid_tree(tmp_path / f"imagenet-{which}", picked, per_class=1)
    full = loader(str(tmp_path), classes="1000")
    sub = loader(str(tmp_path), classes="200")
    assert full.name == f"imagenet-{which}" and sub.name == f"imagenet-{which}-200"
    assert full.labels.tolist() == [subset_indices(which)[k] for k in (0, 5, 199)]
    assert sub.labels.tolist() == [0, 5, 199] and len(sub.classnames) == 200
    assert [full.classnames[i] for i in full.labels] == [sub.classnames[i] for i in sub.labels]


def test_r_rejects_a_folder_that_is_not_an_r_class(tmp_path):
    not_r = next(w for w in imagenet_wnids() if w not in subset_wnids("r"))
    wnid_tree(tmp_path / "imagenet-r", [subset_wnids("r")[0], not_r], per_class=1)
    with pytest.raises(ClipauditError, match=not_r):
        imagenet_r(str(tmp_path))


@pytest.mark.parametrize("name", ["imagenet-val", "imagenetv2", "imagenet-sketch", "imagenet-r", "imagenet-a-200"])
def test_missing_dataset_says_where_it_looked(tmp_path, name):
    with pytest.raises(ClipauditError, match="not found.*Looked in: " + str(tmp_path)):
        create_dataset(name, root=str(tmp_path))
    with pytest.raises(ClipauditError, match="needs a data folder"):
        create_dataset(name)


# ------------------------------------------------------------------------------------------- published.csv
def test_published_file_schema_every_row_sourced():
    from analysis.reproduce import COLUMNS, TABLES, load_published

    df = load_published()
    assert tuple(df.columns) == COLUMNS
    assert (df["source"].str.len() > 0).all() and (df["paper"].str.len() > 0).all()
    assert set(df["table"]) <= set(TABLES.list())
    for table, dataset in zip(df["table"], df["dataset"]):  # every number is for a dataset its table runs on
        assert dataset in TABLES.get(table).datasets, (table, dataset)
    missing = df[df["value"].isna()]
    assert len(missing) and missing["notes"].str.contains("MISSING").all()
    # spot checks against the reference note (hierarchy_clip.md §4, mutual_knowledge.md §3)
    pick = df.set_index(["table", "model", "dataset", "row", "column"])["value"]
    assert pick["ge2023-tab1", "ViT-B/16", "imagenet-val", "full", "base"] == 64.18
    assert pick["ge2023-tab4", "ViT-B/16", "imagenet-a", "low", "hierarchy+ensemble"] == 22.00
    assert pick["sammani2024-mi-auc", "ViT-B/16-dfn", "imagenet-val", "mean", "MI (PCA)"] == 8.19


def test_published_check_rejects_unsourced_and_duplicate_rows():
    from analysis.reproduce.published import check_published, load_published

    df = load_published().astype({"value": object})
    bad = df.copy()
    bad.loc[0, "source"] = ""
    with pytest.raises(ClipauditError, match="'source' is empty"):
        check_published(bad)
    with pytest.raises(ClipauditError, match="duplicate"):
        check_published(pd.concat([df, df.head(1)], ignore_index=True))


def test_paper_model_names():
    from analysis.reproduce import paper_model_name

    assert paper_model_name("ViT-B-16", "openai") == "ViT-B/16"
    assert paper_model_name("ViT-L-14-336", "openai") == "ViT-L/14@336"
    assert paper_model_name("RN50x16", "openai") == "RN50x16"
    assert paper_model_name("ViT-B-16", "dfn2b") == "ViT-B/16-dfn"
    assert paper_model_name("ViT-B-16", "laion2b_s34b_b88k") == "ViT-B/16 (laion2b_s34b_b88k)"
    assert paper_model_name("clipaudit-tiny-vit", None) == "clipaudit-tiny-vit (no weights)"


def test_compare_puts_published_next_to_ours_and_keeps_unrun_rows():
    from analysis.reproduce import compare, load_published

    ours = pd.DataFrame([{"table": "ge2023-tab3", "model": "m", "paper_model": "RN50", "dataset": "imagenet-val",
                          "row": "full", "column": "gain", "ours": 4.0, "unit": "top-1 pt", "n_images": 10,
                          "notes": ""}])
    out = compare(ours, "ge2023-tab3")
    first = out.iloc[0]
    assert (first["published"], first["diff"]) == (3.73, pytest.approx(4.0 - 3.73))
    n_pub = int(load_published("ge2023-tab3")["value"].notna().sum())
    assert len(out) == n_pub  # the other 9 published numbers are listed as not run
    assert (out["model"] == "(not run)").sum() == n_pub - 1


def test_subset_flag_in_context_markdown_and_note(tmp_path, tiny_vit):
    from analysis.cache import EmbeddingCache
    from analysis.reproduce import DemoOptions, ModelEntry, ReproContext, run_table, to_markdown

    def ctx(limit):
        return ReproContext([ModelEntry(tiny_vit, "x")], EmbeddingCache(tmp_path / "c", progress=False),
                            limit=limit, templates="simple_imagenet", demo=DemoOptions(demo_dataset="bundled"))

    small = ctx(30)
    small.dataset("bundled")
    assert small.subset and small.sizes["bundled"] == (30, 1000)
    full = ctx(None)
    full.dataset("bundled")
    assert not full.subset
    r = run_table("demo-fashion-mnist", small)
    assert r.subset and "RAN ON A SUBSET (--limit 30): bundled 30 of 1,000 images" in to_markdown(r)
    assert (r.comparison["n_images"].dropna() <= 30).all()
