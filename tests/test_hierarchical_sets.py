"""Hierarchical answers of conformal sets: the lowest common WordNet hypernym, its correctness and coverage.

Runs on real WordNet 3.0 (CI: apt-get install wordnet-base wordnet-sense-index, or nltk's own copy); skips
when none is installed.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from functools import reduce

import numpy as np
import pandas as pd
import pytest

from analysis._checks import ClipauditError
from analysis.conformal import conformal_quantile, conformal_scores, prediction_sets, set_metrics
from analysis.hierarchical_sets import SUMMARY_DEFINITIONS, hierarchical_answers, lowest_common_hypernym

NAMES = ["dog.n.01", "cat.n.01", "car.n.01", "fox.n.01", "truck.n.01", "beagle.n.01", "sparrow.n.01",
         "oak.n.02", "guitar.n.01", "bicycle.n.01", "horse.n.01", "salmon.n.01"]


@pytest.fixture(scope="module")
def wn():
    from analysis.data.wordnet import load_wordnet

    try:
        return load_wordnet(download=False)
    except ClipauditError as exc:
        pytest.skip(f"WordNet 3.0 is not installed: {exc}")


@pytest.fixture(scope="module")
def syn(wn):
    return [wn.synset(n) for n in NAMES]


def _on_paths(synset):
    """Every node on the synset's hypernym paths (nltk's hypernym_paths, an independent walk)."""
    return {s for path in synset.hypernym_paths() for s in path}


def _brute_lca(synsets):
    common = set.intersection(*(_on_paths(s) for s in synsets))
    return min(common, key=lambda s: (-s.max_depth(), s.name()))


def test_pairs_match_nltk(wn, syn):
    dog, cat, car = wn.synset("dog.n.01"), wn.synset("cat.n.01"), wn.synset("car.n.01")
    assert lowest_common_hypernym([cat, dog]) == cat.lowest_common_hypernyms(dog)[0]
    assert lowest_common_hypernym([cat, dog]).name() == "carnivore.n.01"
    high = lowest_common_hypernym([cat, dog, car])
    assert high == _brute_lca([cat, dog, car])
    assert high.min_depth() <= lowest_common_hypernym([cat, dog]).min_depth() - 5  # a set with a car goes far up
    for a, b in itertools.combinations(syn, 2):
        assert lowest_common_hypernym([a, b]) == a.lowest_common_hypernyms(b)[0], (a, b)
        assert lowest_common_hypernym([b, a]) == lowest_common_hypernym([a, b])
    assert lowest_common_hypernym([dog]) == dog and lowest_common_hypernym([dog, dog]) == dog
    assert lowest_common_hypernym([dog, wn.synset("beagle.n.01")]) == dog  # an ancestor of the other is the answer
    with pytest.raises(ClipauditError):
        lowest_common_hypernym([])


def test_sets_of_three_or_more_match_a_brute_force_and_ignore_order(wn, syn):
    for trio in itertools.combinations(syn[:8], 3):
        got = lowest_common_hypernym(list(trio))
        assert got == _brute_lca(trio), trio
        assert all(lowest_common_hypernym(list(p)) == got for p in itertools.permutations(trio))
    # WordNet's multiple inheritance: folding nltk's pairwise call depends on the order and can overshoot
    trio = [wn.synset(n) for n in ("computer_keyboard.n.01", "printer.n.02", "crane.n.04")]
    folds = {reduce(lambda x, y: x.lowest_common_hypernyms(y)[0], p) for p in itertools.permutations(trio)}
    got = lowest_common_hypernym(trio)
    assert got == _brute_lca(trio) and got in folds and len(folds) > 1
    assert all(got.max_depth() >= f.max_depth() for f in folds)


def test_table_rows_against_direct_computation(wn, syn):
    rng = np.random.default_rng(0)
    n, c = 400, len(syn)
    sets = rng.random((n, c)) < rng.choice([0.0, 0.08, 0.2, 0.5], size=(n, 1))
    sets[:20] = False
    sets[np.arange(20), rng.integers(0, c, 20)] = True  # some singletons for sure
    labels = rng.integers(0, c, n)
    table, summary = hierarchical_answers(sets, labels, syn)
    assert list(table.columns) == ["size", "kind", "answer", "answer_name", "synset", "is_class", "depth", "correct"]
    assert len(table) == n and (table["size"].to_numpy() == sets.sum(1)).all()
    for i, row in table.iterrows():
        members = np.flatnonzero(sets[i])
        true = syn[labels[i]]
        if len(members) == 0:
            assert row["kind"] == "empty" and row["answer"] is None and not row["correct"]
            assert pd.isna(row["depth"])
        elif len(members) == 1:
            k = members[0]
            assert row["kind"] == "class" and row["is_class"] and row["answer"] == str(k)
            assert row["synset"] == syn[k].name() and row["depth"] == syn[k].min_depth()
            assert row["answer_name"] == syn[k].lemma_names()[0].replace("_", " ")
            assert row["correct"] == (labels[i] == k)
        else:
            a = _brute_lca([syn[k] for k in members])
            assert row["kind"] == "ancestor" and not row["is_class"]
            assert row["answer"] == a.name() and row["depth"] == a.min_depth()
            assert row["correct"] == (a in _on_paths(true))
    kinds = Counter(table["kind"])
    assert set(kinds) == {"class", "ancestor", "empty"}
    assert summary["class_fraction"] == kinds["class"] / n and summary["empty_fraction"] == kinds["empty"] / n
    assert summary["ancestor_fraction"] == kinds["ancestor"] / n and summary["unmapped_fraction"] == 0.0
    anc = table[table["kind"] == "ancestor"]
    assert summary["mean_ancestor_depth"] == pytest.approx(anc["depth"].astype(float).mean())
    set_depth = [np.mean([syn[k].min_depth() for k in np.flatnonzero(sets[i])]) for i in anc.index]
    assert summary["mean_set_class_depth"] == pytest.approx(np.mean(set_depth))
    assert summary["mean_depth_drop"] == pytest.approx(np.mean(set_depth) - anc["depth"].astype(float).mean())
    assert summary["mean_class_depth"] == pytest.approx(np.mean([s.min_depth() for s in syn]))
    assert summary["mean_answer_depth"] == pytest.approx(table["depth"].dropna().astype(float).mean())
    expected = sorted(Counter(anc["answer"]).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert [(t["answer"], t["count"]) for t in summary["top_ancestors"]] == expected
    assert set(summary) == set(SUMMARY_DEFINITIONS)


def test_coverage_is_the_set_coverage_plus_what_the_ancestors_add(syn):
    """Every class mapped: a set holding the true class is answered correctly, so coverage = set coverage +
    the misses an ancestor still covers (recomputed directly); it equals the set coverage when sets never miss
    under an ancestor."""
    rng = np.random.default_rng(1)
    c = len(syn)
    for trial in range(5):
        n = 300
        z = rng.normal(size=(n, c)) * 2
        y = rng.integers(0, c, n)
        z[np.arange(n), y] += 2
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        half = n // 2
        qhat, _ = conformal_quantile(conformal_scores(p[:half], y[:half], rng=trial), 0.1)
        sets = prediction_sets(p[half:], qhat, rng=100 + trial)
        labels = y[half:]
        table, summary = hierarchical_answers(sets, labels, syn)
        covered = sets[np.arange(len(labels)), labels]
        correct = table["correct"].to_numpy(dtype=bool)
        assert correct[covered].all()
        gain = [not covered[i] and row["kind"] == "ancestor" and _lca_of(syn, sets[i]) in _on_paths(syn[labels[i]])
                for i, row in table.iterrows()]
        assert summary["coverage_gain"] == pytest.approx(np.mean(gain))
        assert summary["set_coverage"] == pytest.approx(set_metrics(sets, labels)["coverage"])
        assert summary["coverage"] == pytest.approx(correct.mean())
        assert summary["coverage"] == pytest.approx(summary["set_coverage"] + summary["coverage_gain"])
        # the same sets with every miss made empty or a wrong singleton: nothing for an ancestor to add
        strict = sets.copy()
        miss = ~covered
        strict[miss] = False
        strict[miss, (labels[miss] + 1) % c] = rng.random(miss.sum()) < 0.5
        _, s2 = hierarchical_answers(strict, labels, syn)
        assert s2["coverage_gain"] == 0.0 and s2["coverage"] == pytest.approx(s2["set_coverage"])
        assert s2["set_coverage"] == pytest.approx(summary["set_coverage"])


def _lca_of(syn, row):
    return lowest_common_hypernym([syn[k] for k in np.flatnonzero(row)])


def test_unmapped_empty_and_unlabelled(wn, syn):
    synsets = [*syn[:3], None]  # class 3 has no synset
    sets = np.array([[1, 0, 0, 1], [0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 1]], bool)
    labels = np.array([3, 3, 0, 3, 0])
    table, summary = hierarchical_answers(sets, labels, synsets, classnames=["dog", "cat", "car", "blob"])
    assert table["kind"].tolist() == ["unmapped", "class", "empty", "ancestor", "class"]
    assert table.loc[0, "answer"] is None and table.loc[0, "answer_name"] == "(unmapped)"
    assert table.loc[1, "answer"] == "3" and table.loc[1, "answer_name"] == "blob" and table.loc[1, "synset"] is None
    assert table["depth"].isna().tolist() == [True, True, True, False, True]
    # the unmapped row holds the true class yet has no answer; an ancestor cannot vouch for an unmapped label
    assert table["correct"].tolist() == [False, True, False, False, False]
    assert summary["set_coverage"] == 0.4 and summary["coverage"] == 0.2
    assert summary["unmapped_fraction"] == 0.2 and summary["empty_fraction"] == 0.2
    unl, s_unl = hierarchical_answers(sets, None, synsets)
    assert unl["correct"].isna().all() and s_unl["coverage"] is None and s_unl["set_coverage"] is None
    assert unl["answer"].tolist() == table["answer"].tolist()
    # no NaN anywhere in a summary, even with nothing to average
    _, s_none = hierarchical_answers(np.eye(3, dtype=bool), [0, 1, 2], syn[:3])
    assert s_none["mean_ancestor_depth"] is None and s_none["top_ancestors"] == [] and s_none["coverage"] == 1.0
    for s in (summary, s_unl, s_none):
        assert not any(isinstance(v, float) and not math.isfinite(v) for v in s.values())


def test_names_ids_and_objects_give_the_same_answers(wn, syn):
    from analysis.data.wordnet import wnid_of

    rng = np.random.default_rng(2)
    sets = rng.random((60, 5)) < 0.4
    labels = rng.integers(0, 5, 60)
    objects, _ = hierarchical_answers(sets, labels, syn[:5])
    names, _ = hierarchical_answers(sets.astype(int), labels, NAMES[:5], wordnet=wn)
    ids, _ = hierarchical_answers(sets, labels.astype(float), [wnid_of(s) for s in syn[:5]], wordnet=wn)
    assert objects.equals(names) and objects.equals(ids)
    # permuting the classes (columns, synsets and labels together) changes no ancestor answer
    perm = rng.permutation(5)
    inv = np.argsort(perm)
    permuted, _ = hierarchical_answers(sets[:, perm], inv[labels], [syn[k] for k in perm])
    anc = objects["kind"] == "ancestor"
    assert permuted.loc[anc, "answer"].tolist() == objects.loc[anc, "answer"].tolist()
    assert permuted["correct"].tolist() == objects["correct"].tolist()


def test_real_mapping_of_the_bundled_classes(wn):
    """The hierarchy stage's mapping (override file of the bundled Fashion-MNIST) feeds straight in."""
    from analysis.hierarchy import map_dataset_classes

    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
    mapping, _, _ = map_dataset_classes(wn, classes, "fashion-mnist", class_map="lemma")
    assert all(s is not None for s in mapping.synsets)
    sets = np.zeros((3, 10), bool)
    sets[0, [0, 6]] = sets[1, [5, 7, 9]] = sets[2, [1, 8]] = True
    table, _ = hierarchical_answers(sets, [6, 9, 4], mapping.synsets, classnames=classes)
    for i in range(3):
        members = [mapping.synsets[k] for k in np.flatnonzero(sets[i])]
        assert table.loc[i, "answer"] == _brute_lca(members).name()
    assert table["correct"].tolist()[:2] == [True, True]


@pytest.mark.parametrize("call, match", [
    (lambda s: hierarchical_answers(np.ones((2, 3), bool), [0, 1], s[:2]), "one synset .* per class"),
    (lambda s: hierarchical_answers(np.ones((2, 2), bool), [0, 2], s[:2]), r"labels must lie in \[0, 1\]"),
    (lambda s: hierarchical_answers(np.ones((2, 2), bool), [0], s[:2]), "labels must have shape"),
    (lambda s: hierarchical_answers(np.full((2, 2), 0.5), [0, 1], s[:2]), "boolean"),
    (lambda s: hierarchical_answers(np.ones(3, bool), [0, 1, 2], s[:3]), "2-D"),
    (lambda s: hierarchical_answers(np.ones((2, 2), bool), [0, 1], [s[0], 3]), r"synsets\[1\]"),
    (lambda s: hierarchical_answers(np.ones((2, 2), bool), [0, 1], s[:2], top=0), "top"),
])
def test_bad_input_is_named(syn, call, match):
    with pytest.raises(ClipauditError, match=match):
        call(syn)


def test_unknown_synset_name_is_named(wn):
    with pytest.raises(ClipauditError, match="'dgo.n.01' is not a WordNet synset"):
        hierarchical_answers(np.ones((1, 2), bool), [0], ["dog.n.01", "dgo.n.01"], wordnet=wn)
