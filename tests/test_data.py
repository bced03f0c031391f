"""Dataset kinds: class folders, manifests, IDX files, ImageNet wnid folders, prompts, perturbations."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from PIL import Image

from analysis import ClipauditError
from analysis.data import (
    DATASETS,
    FASHION_MNIST_CLASSES,
    create_dataset,
    dataset_splits,
    fashion_mnist,
    get_perturbation,
    load_templates,
    read_idx,
)


def test_image_folder_names_from_folders_and_file(image_folder):
    ds = create_dataset(str(image_folder))
    assert ds.classnames == ["blue sky", "green leaf", "red apple"]
    assert len(ds) == 12 and ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert ds.load_image(0).mode == "RGB"
    (image_folder / "classnames.txt").write_text("sky\nleaf\napple\n")
    assert create_dataset(str(image_folder)).classnames == ["sky", "leaf", "apple"]
    with pytest.raises(ClipauditError, match="2 class names given for 3 class folders"):
        create_dataset(str(image_folder), classnames=["a", "b"])


def test_subset_and_fingerprint(image_folder):
    ds = create_dataset(str(image_folder))
    sub = ds.subset([1, 5, 9])
    assert sub.labels.tolist() == [0, 1, 2]
    assert sub.describe(1) == ds.describe(5)
    assert sub.fingerprint() != ds.fingerprint()
    assert ds.subset([1, 5, 9]).fingerprint() == sub.fingerprint()
    limited = create_dataset(str(image_folder), limit=6)
    assert np.bincount(limited.labels).tolist() == [2, 2, 2]


def test_csv_manifest_with_labels_and_several_captions(image_folder, tmp_path):
    files = sorted(image_folder.rglob("*.png"))[:3]
    rows = ["path,label,caption"]
    rows += [f"{files[0]},cat,a cat", f"{files[0]},cat,a small cat", f"{files[1]},dog,a dog", f"{files[2]},cat,"]
    (tmp_path / "m.csv").write_text("\n".join(rows))
    ds = create_dataset(str(tmp_path / "m.csv"))
    assert ds.classnames == ["cat", "dog"] and ds.labels.tolist() == [0, 1, 0]
    assert ds.captions == [["a cat", "a small cat"], ["a dog"], []]


def test_jsonl_manifest_relative_paths(image_folder, tmp_path):
    lines = [{"path": str(p.relative_to(image_folder)), "captions": [f"photo {i}"]}
             for i, p in enumerate(sorted(image_folder.rglob("*.png"))[:2])]
    (image_folder / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    ds = create_dataset(str(image_folder / "m.jsonl"))
    assert ds.labels.tolist() == [-1, -1] and ds.captions == [["photo 0"], ["photo 1"]]
    assert ds.load_image(1).size == (24, 24)
    (tmp_path / "bad.jsonl").write_text('{"path": "x.png"}\n{oops\n')
    with pytest.raises(ClipauditError, match=r"bad.jsonl:2: not valid JSON"):
        create_dataset(str(tmp_path / "bad.jsonl"))


def _write_idx(path, arr, gz):
    codes = {np.uint8: 0x08}
    header = bytes([0, 0, codes[arr.dtype.type], arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    data = header + arr.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx_files(tmp_path, gz):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (7, 28, 28), dtype=np.uint8)
    labels = np.array([0, 1, 2, 9, 3, 3, 5], dtype=np.uint8)
    ext = ".gz" if gz else ""
    _write_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}", images, gz)
    _write_idx(tmp_path / f"t10k-labels-idx1-ubyte{ext}", labels, gz)
    ds = fashion_mnist(tmp_path, "test", download=False)
    assert len(ds) == 7 and ds.labels.tolist() == labels.tolist()
    assert ds.classnames == list(FASHION_MNIST_CLASSES)
    np.testing.assert_array_equal(np.asarray(ds.load_image(3))[..., 0], images[3])
    np.testing.assert_array_equal(read_idx(tmp_path / f"t10k-images-idx3-ubyte{ext}"), images)


def test_bad_idx_file_is_named(tmp_path):
    (tmp_path / "x-idx3-ubyte").write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(ClipauditError, match="x-idx3-ubyte.*not an IDX file"):
        read_idx(tmp_path / "x-idx3-ubyte")


def test_bundled_subset_is_stratified():
    ds = create_dataset(None)
    assert len(ds) == 1000 and np.bincount(ds.labels).tolist() == [100] * 10
    assert ds.load_image(0).size == (28, 28)


def test_imagenet_wnid_folder_uses_standard_order(tmp_path):
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    for wnid in ("n01440764", "n02012849"):  # tench (0), crane the bird (134)
        (tmp_path / wnid).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / wnid / "a.JPEG")
    ds = create_dataset(str(tmp_path))
    assert ds.labels.tolist() == [0, 134]
    assert len(ds.classnames) == 1000 and ds.classnames[134] == IMAGENET_CLASSNAMES[134]


def test_unknown_dataset_name_suggests():
    with pytest.raises(ClipauditError, match="Did you mean 'fashion-mnist'"):
        create_dataset("fashion-mnsit")


def test_prompt_files_both_placeholders_and_cupl(tmp_path):
    (tmp_path / "t.txt").write_text("# comment\na photo of a {}.\na drawing of a {c}.\n")
    assert load_templates(str(tmp_path / "t.txt")).templates == ("a photo of a {}.", "a drawing of a {}.")
    (tmp_path / "b.json").write_text(json.dumps({"cifar10": ["a {c}."], "dtd": ["{c} texture."]}))
    assert load_templates(f"{tmp_path / 'b.json'}:dtd").templates == ("{} texture.",)
    (tmp_path / "cupl.json").write_text(json.dumps({"cat": ["a fluffy cat", "a cat napping"], "dog": ["a dog"]}))
    cupl = load_templates(str(tmp_path / "cupl.json"))
    assert cupl.prompts(["dog", "cat"]) == [["a dog"], ["a fluffy cat", "a cat napping"]]
    with pytest.raises(ClipauditError, match="no prompts for class"):
        cupl.prompts(["cow"])
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ClipauditError, match="empty"):
        load_templates(str(tmp_path / "empty.txt"))
    (tmp_path / "bad.txt").write_text("a photo\n")
    with pytest.raises(ClipauditError, match="placeholder"):
        load_templates(str(tmp_path / "bad.txt"))


def test_perturbations():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.equal(get_perturbation("hflip")(x), x.flip(-1))
    assert torch.equal(get_perturbation("vflip")(x), x.flip(-2))
    assert torch.equal(get_perturbation("none")(x), x)
    assert torch.allclose(get_perturbation("rot:0")(x), x)
    assert get_perturbation("crop:0.5")(x).shape == x.shape
    with pytest.raises(ClipauditError, match="Unknown perturbation"):
        get_perturbation("blur")


# ----------------------------------------------------------------------------------------------- splits
def _split_folder(root, classes_per_split):
    """root/<split>/<class>/<i>.png for each split and its classes (2 images per class)."""
    from conftest import make_image

    rng = np.random.default_rng(0)
    for split, classes in classes_per_split.items():
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(2):
                make_image(rng, (40 * len(c), 100, 50)).save(root / split / c / f"{i}.png")
    return root


def test_named_dataset_split_is_checked_against_its_declared_splits():
    entry = DATASETS.get("fashion-mnist")
    assert entry.splits == ("train", "test") and entry.default_split == "test"
    with pytest.raises(ClipauditError, match=r"--split 'banana' is not a split of dataset 'fashion-mnist'\. "
                                             r"Accepted: 'train', 'test'\.$"):
        create_dataset("fashion-mnist", split="banana")
    with pytest.raises(ClipauditError, match="Did you mean 'train'"):
        create_dataset("fashion-mnist", split="trian")
    bundled = create_dataset("bundled")
    assert bundled.split == "test"
    with pytest.raises(ClipauditError, match="not a split of dataset 'bundled'. Accepted: 'test'"):
        create_dataset("bundled", split="train")


@pytest.mark.parametrize("name", DATASETS.list())
def test_every_registered_dataset_rejects_an_unknown_split(name):
    """Registry sweep: every entry declares its splits, and a wrong one fails before any file is read."""

    entry = DATASETS.get(name)
    assert entry.default_split in entry.splits
    assert dataset_splits(name) == (entry.splits, entry.default_split)
    with pytest.raises(ClipauditError, match=rf"--split 'banana' is not a split of dataset '{name}'"):
        create_dataset(name, split="banana", root="does-not-matter")


def test_fashion_mnist_records_its_split(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), False)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8), False)
    train = create_dataset("fashion-mnist", split="train", root=str(tmp_path))
    test = create_dataset("fashion-mnist", root=str(tmp_path))  # the default split
    assert (train.split, len(train)) == ("train", 5) and (test.split, len(test)) == ("test", 3)


def test_folder_without_splits_refuses_a_split(image_folder):
    ds = create_dataset(str(image_folder))
    assert ds.split == "unspecified"
    with pytest.raises(ClipauditError, match=r"--split 'test': dataset '.*folder' has no splits \(no train/ val/ "
                                             r"test/ subfolders\); drop --split"):
        create_dataset(str(image_folder), split="test")


def test_split_subfolders_pick_one_with_the_same_labels(tmp_path):
    root = _split_folder(tmp_path / "shapes", {"train": ["circle", "square", "star"], "test": ["circle", "star"]})
    assert dataset_splits(str(root)) == (("train", "test"), "test")
    train = create_dataset(str(root), split="train")
    test = create_dataset(str(root))  # default: test
    assert (train.split, test.split) == ("train", "test") and train.name == test.name == "shapes"
    assert train.classnames == test.classnames == ["circle", "square", "star"]
    assert sorted(set(test.labels.tolist())) == [0, 2]  # 'star' is still label 2 without a 'square' folder
    assert all("/test/" in test.describe(i).replace("\\", "/") for i in range(len(test)))
    with pytest.raises(ClipauditError, match=r"not a split of dataset .*shapes'. Accepted: 'train', 'test'"):
        create_dataset(str(root), split="val")


def test_manifest_split_column_filters_rows(image_folder, tmp_path):
    files = sorted(image_folder.rglob("*.png"))
    rows = ["path,label,split", f"{files[0]},cat,train", f"{files[1]},dog,train", f"{files[2]},dog,test",
            f"{files[3]},bird,test"]
    (tmp_path / "m.csv").write_text("\n".join(rows))
    train = create_dataset(str(tmp_path / "m.csv"), split="train")
    test = create_dataset(str(tmp_path / "m.csv"))  # default: test
    assert (train.split, test.split) == ("train", "test")
    assert train.classnames == test.classnames == ["cat", "dog", "bird"]  # numbered over every row
    assert train.labels.tolist() == [0, 1] and test.labels.tolist() == [1, 2]
    assert [test.describe(i) for i in range(2)] == [str(files[2]), str(files[3])]
    with pytest.raises(ClipauditError, match="Accepted: 'train', 'test'"):
        create_dataset(str(tmp_path / "m.csv"), split="val")
    (tmp_path / "gap.jsonl").write_text(json.dumps({"path": str(files[0]), "label": "cat", "split": "train"}) + "\n"
                                        + json.dumps({"path": str(files[1]), "label": "dog"}) + "\n")
    with pytest.raises(ClipauditError, match=r"'split' column but row\(s\) \[2\] have no split"):
        create_dataset(str(tmp_path / "gap.jsonl"))
    (tmp_path / "plain.csv").write_text("\n".join(["path,label", f"{files[0]},cat", f"{files[1]},dog"]))
    assert create_dataset(str(tmp_path / "plain.csv")).split == "unspecified"
    with pytest.raises(ClipauditError, match=r"has no splits \(no 'split' column\)"):
        create_dataset(str(tmp_path / "plain.csv"), split="train")


# ------------------------------------------------------------------------------------ subset provenance
def test_subset_info_round_trip(image_folder):
    import hashlib

    full = create_dataset(str(image_folder))
    assert full.subset_info() is None and full.root is full
    np.testing.assert_array_equal(full.root_indices(), np.arange(12))
    sub = create_dataset(str(image_folder), limit=6, seed=3)
    info = sub.subset_info()
    expected_sha = hashlib.sha256(np.asarray(sub.indices, dtype="<i8").tobytes()).hexdigest()
    assert info == {"kind": "stratified", "limit": 6, "seed": 3, "n": 6, "of": 12, "indices_sha256": expected_sha}
    assert sub.root is sub.parent and sub.split == full.split == "unspecified"
    assert create_dataset(str(image_folder), limit=6, seed=3).subset_info() == info  # same settings, same subset
    # a subset of the subset: indices into the root, its own provenance
    inner = sub.subset([0, 2])
    np.testing.assert_array_equal(inner.root_indices(), sub.indices[[0, 2]])
    assert inner.root is sub.root and inner.describe(1) == full.describe(int(sub.indices[2]))
    assert inner.subset_info()["kind"] == "indices" and inner.subset_info()["limit"] is None
    assert inner.subset_info()["of"] == 12 and inner.subset_info()["n"] == 2
    identity = sub.identity()
    assert identity == {"name": "folder", "split": "unspecified", "subset_info": info,
                        "fingerprint": sub.fingerprint(), "n_images": 6}


def test_limit_at_least_the_size_keeps_the_full_dataset(image_folder):
    for limit in (12, 50):
        ds = create_dataset(str(image_folder), limit=limit)
        assert len(ds) == 12 and ds.subset_info() is None and ds.root is ds


@pytest.mark.parametrize("limit", [0, -5, 2.5, True, "10"])
def test_limit_must_be_a_positive_integer(image_folder, limit):
    with pytest.raises(ClipauditError, match=rf"--limit must be a positive integer .*got {limit!r}"):
        create_dataset(str(image_folder), limit=limit)
