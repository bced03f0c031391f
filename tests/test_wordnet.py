"""WordNet through nltk: source resolution, the missing-WordNet error, ImageNet ids, overrides, lookups.

Needs WordNet 3.0 (CI: apt-get install wordnet-base wordnet-sense-index, or nltk's own copy).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis._checks import ClipauditError
from analysis.data import wordnet as w
from analysis.resources import data_dir


@pytest.fixture(scope="module")
def wn():
    return w.load_wordnet()


def test_source_and_version(wn):
    source = w.find_wordnet()
    assert source.kind in ("nltk_data", "system", "download")
    assert wn.get_version() == "3.0"
    assert wn.synset("dog.n.01").lexname() == "noun.animal"


def test_lexnames_table_matches_wordnet(wn):
    assert len(w.LEXNAMES) == 45
    pos_number = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
    assert all(pos_number[name.split(".")[0]] == p for name, p in w.LEXNAMES)
    # every data line's lexicographer file number (field 2) must name a file of the line's POS (field 3)
    folder = Path(w.find_wordnet().origin or w.find_wordnet().path)
    if not (folder / "data.noun").is_file():
        pytest.skip("WordNet is zipped here; the table is checked on a plain folder")
    ss_type = {"n": 1, "v": 2, "a": 3, "s": 3, "r": 4}
    used = set()
    for pos in ("noun", "verb", "adj", "adv"):
        with open(folder / f"data.{pos}", encoding="latin-1") as fh:
            for line in fh:
                if not line.startswith(" "):
                    f = line.split(" ", 3)
                    assert w.LEXNAMES[int(f[1])][1] == ss_type[f[2]], line[:40]
                    used.add(int(f[1]))
    assert used == set(range(45))
    assert wn.synset("run.v.01").lexname() == "verb.motion"
    assert wn.synset("happy.a.01").lexname() == "adj.all"


def test_missing_wordnet_gives_one_clear_error(tmp_path, monkeypatch):
    import nltk

    empty = tmp_path / "empty"
    empty.mkdir()
    partial = tmp_path / "partial"  # a system folder lacking the sense index
    partial.mkdir()
    for name in ("index.noun", "data.noun"):
        (partial / name).write_text("")
    monkeypatch.setattr(nltk, "download", lambda *a, **k: False)  # "offline"
    with pytest.raises(ClipauditError) as err:
        w.find_wordnet(cache_dir=tmp_path / "cache", nltk_paths=[str(empty)], system_dirs=[empty, partial])
    msg = str(err.value)
    assert "apt-get install wordnet-base wordnet-sense-index" in msg and "nltk.download('wordnet')" in msg
    assert "index.sense" in msg and "download" in msg
    with pytest.raises(ClipauditError, match="apt-get install"):
        w.find_wordnet(cache_dir=tmp_path / "cache", nltk_paths=[], system_dirs=[], download=False)


def test_system_wordnet_is_prepared_for_nltk(tmp_path):
    system = Path("/usr/share/wordnet")
    if w._missing_files(system):
        pytest.skip("no system WordNet (wordnet-base + wordnet-sense-index) on this machine")
    source = w.find_wordnet(cache_dir=tmp_path, nltk_paths=[], system_dirs=[system], download=False)
    assert source.kind == "system" and source.origin == str(system)
    folder = tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert Path(source.path) == folder
    lines = (folder / "lexnames").read_text().splitlines()
    assert lines[0] == "00\tadj.all\t3" and lines[5] == "05\tnoun.animal\t1" and lines[44] == "44\tadj.ppl\t3"
    assert (folder / "index.sense").stat().st_nlink == 1  # a real copy: nltk refuses links
    again = w.find_wordnet(cache_dir=tmp_path, nltk_paths=[], system_dirs=[system], download=False)
    assert again == source


def test_imagenet_crane_bird_maps_to_n02012849(wn):
    wnids = w.imagenet_wnids()
    assert len(wnids) == 1000 and wnids[134] == "n02012849"
    bird = w.synset_from_wnid(wn, wnids[134], classname="crane bird")
    assert w.wnid_of(bird) == "n02012849"
    assert "wading_bird.n.01" in [h.name() for h in bird.hypernyms()]
    machine = w.synset_from_wnid(wn, wnids[517])  # the construction crane, the reference file's mistake
    assert machine != bird and w.wnid_of(machine) == "n03126707"
    mapping = w.map_classes(wn, [f"c{i}" for i in range(1000)], wnids=wnids)
    assert mapping.synsets[134] == bird and set(mapping.how) == {"wnid"}


def test_fashion_mnist_maps_through_override_file(wn):
    from analysis.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_OFFICIAL_CLASSES

    path = w.find_override_file("fashion-mnist")
    assert path == data_dir("prompts") / "wordnet_overrides" / "fashion-mnist.json"
    assert w.find_override_file("bundled") == path
    overrides = w.load_overrides(path)
    for names in (FASHION_MNIST_OFFICIAL_CLASSES, FASHION_MNIST_CLASSES):
        m = w.map_classes(wn, names, overrides=overrides, override_source=str(path))
        assert m.how == ["override"] * 10 and not m.unmapped
        syn = dict(zip(names, m.synsets))

        def ancestors(s):
            return {a.name() for path_ in s.hypernym_paths() for a in path_}

        by_official = dict(zip(FASHION_MNIST_OFFICIAL_CLASSES, [syn[n] for n in names]))
        assert "shoe.n.01" in ancestors(by_official["Sneaker"]) and "sneaker" in by_official["Sneaker"].lemma_names()
        assert "shoe.n.01" in ancestors(by_official["Sandal"])
        assert "footwear.n.02" in ancestors(by_official["Ankle boot"])
        assert "T-shirt" in by_official["T-shirt/top"].lemma_names()
        assert "shirt.n.01" in ancestors(by_official["T-shirt/top"])
        assert "sweater.n.01" in ancestors(by_official["Pullover"])
        assert "handbag" in by_official["Bag"].lemma_names()
        for cls in ("Trouser", "Dress", "Coat", "Shirt", "Pullover", "T-shirt/top"):
            assert "clothing.n.01" in ancestors(by_official[cls]), cls


def test_lemma_lookup_reports_ambiguous_and_unmapped_instead_of_failing(wn):
    m = w.map_classes(wn, ["pullover", "bag", "ankle boot", "florbix"])
    assert m.how == ["lemma", "ambiguous", "unmapped", "unmapped"]
    assert m.synsets[1] == wn.synsets("bag", "n")[0]  # most frequent sense
    assert "bag.n.04" in m.ambiguous["bag"]
    assert m.unmapped == ["ankle boot", "florbix"]
    assert w.map_classes(wn, ["bag"], ambiguous="skip").synsets == [None]
    assert list(m.to_frame()["how"]) == m.how
    with pytest.raises(ClipauditError, match="florbix"):
        w.map_classes(wn, ["pullover", "florbix"], strict=True)


def test_unknown_override_words_name_the_class(wn, tmp_path):
    with pytest.raises(ClipauditError, match="'Sneaker'.*sneakerz.n.01"):
        w.resolve_synset(wn, "sneakerz.n.01", classname="Sneaker")
    with pytest.raises(ClipauditError, match="'crane bird'"):
        w.synset_from_wnid(wn, "n99999999", classname="crane bird")
    bad = tmp_path / "o.json"
    bad.write_text(json.dumps({"classes": [{"names": ["sneekr"], "synset": "gym_shoe.n.01"}]}))
    with pytest.raises(ClipauditError, match="sneekr.*Did you mean 'sneaker'"):
        w.map_classes(wn, ["sneaker", "bag"], overrides=w.load_overrides(bad), override_source=str(bad))
    bad.write_text(json.dumps({"classes": [{"names": ["bag"], "synset": "bag.n.01", "wnid": "n02774152"}]}))
    with pytest.raises(ClipauditError, match="'bag'.*make them agree"):
        w.map_classes(wn, ["bag"], overrides=w.load_overrides(bad))
    bad.write_text(json.dumps({"classes": [{"synset": "bag.n.01"}]}))
    with pytest.raises(ClipauditError, match="needs 'names'"):
        w.load_overrides(bad)


def test_class_nodes_keep_every_parent_in_offset_order(wn):
    person = wn.synset("person.n.01")  # two hypernyms: organism (offset 4475), causal_agent (7347)
    (node,) = w.class_nodes(["person"], [person])
    assert [chain[0].name for chain in node.parent_chains] == ["organism", "causal agent"]
    offsets = [int(c.wnid[1:]) for c in node.children]
    assert offsets == sorted(offsets)
    organism, causal = node.parent_chains
    assert [x.name for x in organism] == ["organism", "living thing", "whole", "object", "physical entity"]
    assert [x.abstract for x in organism] == [False, True, True, True, True]  # noun.Tops within 4 of entity
    assert [x.name for x in causal] == ["causal agent", "physical entity"]  # entity itself is left out
    assert {c.name for c in node.children} >= {"adult", "child"}
    (unmapped,) = w.class_nodes(["gizmo"], [None])
    assert unmapped.wnid is None and unmapped.parent_chains == ()


def test_cli_wordnet_status_and_map(capsys):
    from analysis.cli import main

    assert main(["wordnet", "status"]) == 0
    assert "WordNet 3.0" in capsys.readouterr().out
    assert main(["wordnet", "map", "--dataset", "bundled"]) == 0
    out = capsys.readouterr().out
    assert "gym_shoe.n.01" in out and "override" in out
