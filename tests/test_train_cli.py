"""`clipaudit train` and its training data: test splits refused, provenance recorded, ignored options rejected."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_image

from analysis.cli import main
from analysis.data import create_dataset
from analysis.data.idx import DEBIAN_FASHION_MNIST

#: A scratch run that takes a second: the tiny ViT, one step of 8 images.
TINY = ["--mode", "scratch", "--batch-size", "8", "--max-steps", "1", "--templates", "name_only", "-q"]


@pytest.fixture()
def split_folder(tmp_path):
    """shapes/{train,test}/{red,green,blue}/*.png: 4 training and 2 test images per class."""
    rng = np.random.default_rng(0)
    root = tmp_path / "shapes"
    for split, n in (("train", 4), ("test", 2)):
        for name, colour in (("red", (220, 30, 30)), ("green", (30, 200, 40)), ("blue", (40, 60, 230))):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                make_image(rng, colour).save(root / split / name / f"{i}.png")
    return root


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


@pytest.mark.parametrize("mode", ["lit", "scratch"])
def test_train_refuses_the_bundled_test_images(tmp_path, capsys, mode):
    out = tmp_path / "m"
    assert main(["train", "--mode", mode, "--dataset", "bundled", "--out", str(out), "-q"]) == 2
    err = _error_line(capsys)
    assert "Dataset 'bundled' is a test split (split='test')" in err and "--allow-test-data" in err
    assert "--dataset fashion-mnist --split train" in err  # what to do instead
    assert not out.exists()  # refused before anything was written


def test_train_refuses_an_explicit_test_split_and_names_the_train_split(split_folder, tmp_path, capsys):
    assert main(["train", *TINY, "-d", str(split_folder), "--split", "test", "--out", str(tmp_path / "m")]) == 2
    err = _error_line(capsys)
    assert "is a test split" in err and "Train on --split train" in err and "--allow-test-data" in err


def test_allow_test_data_trains_and_records_it(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", *TINY, "-d", "bundled", "--limit", "16", "--allow-test-data", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "training on test data" in printed and "a subset of 1000 (stratified, limit 16, seed 0)" in printed
    meta = json.loads((out / "training.json").read_text())
    expected = create_dataset("bundled", limit=16)
    assert meta["trained_on_test_data"] is True and meta["split"] == "test"
    assert meta["training_dataset"] == {"name": "bundled-fashion-mnist", "split": "test",
                                        "subset_info": expected.subset_info(), "fingerprint": expected.fingerprint(),
                                        "n_images": 16}
    assert meta["training_dataset"]["subset_info"]["limit"] == 16 and meta["limit"] == 16


def test_a_train_split_is_the_default_and_recorded(split_folder, tmp_path):
    out = tmp_path / "m"
    assert main(["train", *TINY, "-d", str(split_folder), "--out", str(out)]) == 0
    meta = json.loads((out / "training.json").read_text())
    train = create_dataset(str(split_folder), split="train")
    assert meta["trained_on_test_data"] is False
    assert meta["training_dataset"] == {"name": "shapes", "split": "train", "subset_info": None,
                                        "fingerprint": train.fingerprint(), "n_images": 12}


def test_train_api_returns_the_data_identity(split_folder, tmp_path):
    from analysis.train import TrainConfig, TrainJob, train

    job = TrainJob(out=str(tmp_path / "m"), mode="scratch", dataset=str(split_folder), limit=6, progress=False,
                   templates="name_only", config=TrainConfig(batch_size=6, max_steps=1))
    result = train(job)
    assert result.steps == 1 and result.trained_on_test_data is False
    assert result.dataset["split"] == "train" and result.dataset["subset_info"]["n"] == 6


@pytest.mark.skipif(not DEBIAN_FASHION_MNIST.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_default_training_data_is_fashion_mnist_train():
    from analysis.train import TrainJob, load_training_dataset

    ds = load_training_dataset(TrainJob(out="unused", limit=20))
    assert ds.name == "fashion-mnist" and ds.split == "train" and ds.root.split == "train" and len(ds.root) == 60000


@pytest.mark.parametrize("args, named", [
    (["--mode", "scratch", "--embed-dim", "128"], "--embed-dim is for --mode lit, not --mode scratch"),
    (["--mode", "scratch", "--name", "x", "--image-size", "64"], "--image-size, --name are for --mode lit"),
    (["--mode", "lit", "--model", "clipaudit-tiny-rn"], "--model is for --mode scratch, not --mode lit"),
    (["--mode", "lit", "--workers", "2"], "--workers is for --mode scratch"),
    (["--text-lr", "1e-4"], "--text-lr 0.0001 needs --train-text"),
])
def test_options_of_the_other_mode_are_errors(tmp_path, capsys, args, named):
    assert main(["train", *args, "-d", "bundled", "--out", str(tmp_path / "m")]) == 2
    assert named in _error_line(capsys)


def test_dataset_may_be_given_once(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "-d", "bundled", "-d", "fashion-mnist", "--out", str(tmp_path / "m")])
    assert exc.value.code == 2
    assert "--dataset/-d: given twice ('bundled', then 'fashion-mnist')" in capsys.readouterr().err


@pytest.mark.parametrize("limit", ["0", "-5"])
def test_limit_must_be_positive(tmp_path, capsys, limit):
    assert main(["train", *TINY, "-d", "bundled", "--allow-test-data", "--limit", limit,
                 "--out", str(tmp_path / "m")]) == 2
    assert f"limit must be a positive integer, got {limit}" in _error_line(capsys)


def test_stand_alone_main_takes_argv(tmp_path, capsys):
    from analysis.train.main import main as train_main

    assert train_main(["-d", "bundled", "--out", str(tmp_path / "m")]) == 2
    assert "--allow-test-data" in _error_line(capsys)


def test_train_arguments_import_no_torch():
    code = ("import sys, analysis.train, analysis.train.params, analysis.train.data; "
            "analysis.train.params.build_parser().format_help(); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_lit_model_folder_records_its_training_data(split_folder, tmp_path):
    """A tiny LiT run with the real towers: clipaudit_model.json and the loaded model carry the provenance."""
    from analysis.models import load_model

    out = tmp_path / "lit"
    assert main(["train", "-d", str(split_folder), "--out", str(out), "--image-size", "32", "--embed-dim", "8",
                 "--batch-size", "6", "--max-steps", "1", "--no-cache", "--templates", "name_only", "-q"]) == 0
    training = json.loads((out / "clipaudit_model.json").read_text())["training"]
    train = create_dataset(str(split_folder), split="train")
    assert training["trained_on_test_data"] is False and training["split"] == "train"
    assert training["training_dataset"]["fingerprint"] == train.fingerprint()
    info = load_model(str(out)).info.extra
    assert info["trained_on_test_data"] is False and info["training_dataset"]["split"] == "train"
