"""Shipped caption vocabularies for the demo model and how `clipaudit train` picks them up."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from analysis.cli.cmd_train import resolve_caption_file
from analysis.data import FASHION_MNIST_CLASSES
from analysis.resources import data_dir
from analysis.train.captions import class_captions

FOLDER = data_dir("descriptors") / "captions"


@pytest.mark.parametrize("suffix", ["synonyms", "kind-of"])
def test_shipped_files_cover_exactly_the_prompt_class_names(suffix):
    data = json.loads((FOLDER / f"fashion-mnist-{suffix}.json").read_text())
    assert sorted(data) == sorted(FASHION_MNIST_CLASSES)
    assert all(isinstance(v, list) and v and all(isinstance(x, str) and x.strip() for x in v) for v in data.values())


def test_synonyms_do_not_name_another_class():
    data = json.loads((FOLDER / "fashion-mnist-synonyms.json").read_text())
    owner: dict[str, str] = {name: name for name in FASHION_MNIST_CLASSES}
    for cls, names in data.items():
        for name in names:
            assert owner.setdefault(name.lower(), cls) == cls, f"{name!r} is a name of two classes"


def _ds(name: str, captions=None):
    return SimpleNamespace(name=name, captions=captions)


def test_auto_resolves_to_the_shipped_files_only_for_class_labelled_fashion_mnist(tmp_path):
    assert resolve_caption_file("auto", "--synonyms", _ds("fashion-mnist")) == str(
        FOLDER / "fashion-mnist-synonyms.json")
    assert resolve_caption_file("auto", "--kind-of", _ds("fashion-mnist")) == str(FOLDER / "fashion-mnist-kind-of.json")
    assert resolve_caption_file("auto", "--synonyms", _ds("my-folder")) is None
    assert resolve_caption_file("auto", "--synonyms", _ds("fashion-mnist", captions=[["a"]])) is None
    assert resolve_caption_file("none", "--synonyms", _ds("fashion-mnist")) is None
    explicit = str(tmp_path / "x.json")
    assert resolve_caption_file(explicit, "--synonyms", _ds("fashion-mnist")) == explicit


def test_shipped_files_make_varied_captions():
    syn = json.loads((FOLDER / "fashion-mnist-synonyms.json").read_text())
    kind = json.loads((FOLDER / "fashion-mnist-kind-of.json").read_text())
    caps = class_captions(list(FASHION_MNIST_CLASSES), ["a photo of a {}."], synonyms=syn, kind_of=kind)
    sneaker = caps[FASHION_MNIST_CLASSES.index("sneaker")]
    assert sneaker[0] == "a photo of a sneaker."
    assert {f"a photo of a {n}." for n in syn["sneaker"]} <= set(sneaker)
    assert {f"a photo of a sneaker, a kind of {p}." for p in kind["sneaker"]} <= set(sneaker)
    assert len(sneaker) == 1 + len(syn["sneaker"]) + len(kind["sneaker"])
