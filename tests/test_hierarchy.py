"""WordNet hierarchy reranking (Ge et al. 2023, Eq. 3): hand-worked examples on hand-built hierarchies.

No WordNet and no model here except in the last test (CLI end to end on a tiny model): class nodes are
built by hand and a fake text encoder maps each exact string to a chosen vector.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis._checks import ClipauditError
from analysis.data.wordnet import ClassNode, WordNode
from analysis.hierarchy import (
    HierarchyOptions,
    build_groups,
    hierarchy_scores,
    hierarchy_texts,
    keep_top_fraction,
    member_embeddings,
    norm_variance,
    pruning_words,
    rerank_topk,
    run_hierarchy,
)


def w(name: str, wnid: str, abstract: bool = False) -> WordNode:
    return WordNode(wnid, name, (name,), abstract)


def unit(*v: float) -> np.ndarray:
    a = np.asarray(v, np.float32)
    return a / np.linalg.norm(a)


class FakeEncoder:
    """Exact string -> fixed unit vector; records every call (to check texts are encoded once)."""

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.calls: list[list[str]] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([self.table[t] for t in texts])  # KeyError = an unexpected string


CANINE = w("canine", "n1")
FELINE = w("feline", "n2")
NODES = [
    ClassNode("cat", "n10", ((FELINE,),), ()),
    ClassNode("dog", "n11", ((CANINE,),), (w("puppy", "n20"),)),
    ClassNode("fox", "n12", ((CANINE,),), ()),
]
TABLE = {
    "cat which is a kind of feline": unit(0.6, 0.8, 0),
    "dog which is a kind of canine": unit(0.5, 0, 0.866),
    "puppy which is a kind of canine": unit(0.9, 0, 0.436),
    "fox which is a kind of canine": unit(0, 0, 1),
}
X = np.stack([unit(1, 0, 0), unit(0, 1, 0)])
LABELS = np.array([1, 2])
BASE = np.array([[0.9, 0.8, 0.1], [0.2, 0.1, 0.95]], np.float32)  # image 0 wrong (cat), image 1 right (fox)
NO_PRUNE = HierarchyOptions(top_k=2, keep_fraction=None)


def test_eq3_hand_worked_example_fixes_low_confidence_image():
    # image 0: candidates cat (0.9), dog (0.8). Eq. 3: cat -> cos(x0, "cat ... feline") = 0.6;
    # dog -> max(cos "dog ... canine" = 0.5, cos "puppy ... canine" = 0.9) = 0.9 -> dog (the label).
    # image 1 is outside O and keeps fox.
    enc = FakeEncoder(TABLE)
    res = run_hierarchy(X, LABELS, BASE, NODES, enc, mask=np.array([True, False]), options=NO_PRUNE)
    assert res.predictions["pred_before"].tolist() == [0, 2]
    assert res.predictions["pred_after"].tolist() == [1, 2]
    m = res.metrics
    assert (m["acc1_before"], m["acc1_after"]) == (0.5, 1.0)
    assert (m["acc1_low_before"], m["acc1_low_after"]) == (0.0, 1.0)
    assert (m["acc1_high_before"], m["acc1_high_after"]) == (1.0, 1.0)
    assert (m["n_changed"], m["n_fixed"], m["n_broken"]) == (1, 1, 0)
    # every text of every class encoded in a single call, with the space after "of"
    assert len(enc.calls) == 1 and sorted(enc.calls[0]) == sorted(TABLE)
    assert res.per_class.set_index("classname").loc["dog", "fixed"] == 1


def test_eq3_on_all_images_can_break_a_right_prediction():
    # image 1 with --set all: candidates fox (0.95), cat (0.2); fox -> 0.0, cat -> cos(x1, cat text) = 0.8.
    res = run_hierarchy(X, LABELS, BASE, NODES, FakeEncoder(TABLE), mask=None, options=NO_PRUNE)
    assert res.predictions["pred_after"].tolist() == [1, 0]
    assert (res.metrics["n_fixed"], res.metrics["n_broken"], res.metrics["acc1_after"]) == (1, 1, 0.5)


def test_candidates_restricted_to_top_k():
    # with k=1 the only candidate is the base top-1: nothing can change
    res = run_hierarchy(X, LABELS, BASE, NODES, FakeEncoder(TABLE), options=HierarchyOptions(1, keep_fraction=None))
    assert res.predictions["pred_after"].tolist() == [0, 2]


def test_scores_equal_brute_force_group_max():
    rng = np.random.default_rng(0)
    feats, weights = rng.normal(size=(7, 4)), rng.normal(size=(6, 4))
    member_class = np.array([0, 0, 1, 2, 2, 2])
    got = hierarchy_scores(feats, weights, member_class, 3, chunk=3)
    want = np.array([[max(float(f @ weights[m]) for m in np.flatnonzero(member_class == c)) for c in range(3)]
                     for f in feats])
    np.testing.assert_allclose(got, want, rtol=1e-5)
    with pytest.raises(ClipauditError, match="sorted"):
        hierarchy_scores(feats, weights, member_class[::-1], 3)


def test_rerank_accepts_scores_of_masked_rows_only():
    rng = np.random.default_rng(1)
    base, scores = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    mask = np.array([1, 0, 1, 1, 0, 0], bool)
    full = rerank_topk(base, scores, mask, k=3)
    assert np.array_equal(full, rerank_topk(base, scores[mask], mask, k=3))
    for i in range(6):
        top = np.argsort(-base[i])[:3]
        assert full[i] == (top[np.argmax(scores[i, top])] if mask[i] else np.argmax(base[i]))


def test_multiple_parent_policy():
    seat, furniture = w("seat", "n30"), w("furniture", "n31")
    nodes = [ClassNode("sofa", "n40", ((seat,), (furniture,)), ()), ClassNode("bed", "n41", ((furniture,),), ())]
    table = {"sofa which is a kind of seat": unit(0, 1), "sofa which is a kind of furniture": unit(1, 0.1),
             "bed which is a kind of furniture": unit(1, 0.3)}
    x, base, labels = np.stack([unit(1, 0)]), np.array([[0.1, 0.9]]), np.array([0])
    first = build_groups(nodes, HierarchyOptions(parent_policy="first", keep_fraction=None))
    assert first.text == ["sofa which is a kind of seat", "bed which is a kind of furniture"]
    both = build_groups(nodes, HierarchyOptions(parent_policy="all-max", keep_fraction=None))
    assert both.text[:2] == ["sofa which is a kind of seat", "sofa which is a kind of furniture"]
    assert both.parents[0] == ["seat", "furniture"]
    # first: sofa 0.0 < bed 0.958 -> bed; all-max: sofa max(0, 0.995) > bed -> sofa (the label)
    pred = {}
    for policy in ("first", "all-max"):
        opts = HierarchyOptions(top_k=2, parent_policy=policy, keep_fraction=None)
        pred[policy] = run_hierarchy(x, labels, base, nodes, FakeEncoder(table), options=opts).predictions
    assert pred["first"]["pred_after"].tolist() == [1]
    assert pred["all-max"]["pred_after"].tolist() == [0]


def test_parent_choice_abstract_pruning_fallback_and_children_cap():
    chain = (w("hound", "a1"), w("artifact", "a2", abstract=True), w("dog", "a3"), w("animal", "a4"))
    kids = (w("beagle", "k1"), w("basset", "k2"), w("bloodhound", "k3"))
    nodes = [ClassNode("foxhound", "c1", (chain,), kids), ClassNode("odd", "c2", ((w("thing", "t", True),),), ())]
    # no pruning: direct parent; abstract direct parent of "odd" is skipped -> fallback to it anyway
    g = build_groups(nodes, HierarchyOptions(keep_fraction=None))
    assert g.parents == [["hound"], ["thing"]] and g.parent_fallback.tolist() == [False, True]
    # pruned "hound": the nearest kept, non-abstract ancestor is "dog" (artifact is abstract, skipped)
    g = build_groups(nodes, HierarchyOptions(max_children=2), keep={"a2", "a3", "a4", "k2", "k3"})
    assert g.parents[0] == ["dog"]
    assert g.text[:3] == ["foxhound which is a kind of dog", "basset which is a kind of dog",
                          "bloodhound which is a kind of dog"]
    assert g.n_children[0] == 2
    g = build_groups(nodes, HierarchyOptions(max_children=0, prune_children=False), keep={"a3"})
    assert g.text[0] == "foxhound which is a kind of dog" and g.n_children[0] == 0
    # all-lemmas: the reference code's comma-joined synonym string
    nodes2 = [ClassNode("collie", "c3", ((WordNode("s", "shepherd dog", ("shepherd dog", "sheepdog"), False),),), ())]
    g = build_groups(nodes2, HierarchyOptions(parent_words="all-lemmas", keep_fraction=None))
    assert g.text == ["collie which is a kind of shepherd dog, sheepdog"]


def test_unmapped_class_scores_with_its_bare_name():
    nodes = [NODES[0], ClassNode("gizmo", None, (), ())]
    g = build_groups(nodes, NO_PRUNE)
    assert g.text == ["cat which is a kind of feline", "gizmo"] and g.kind == ["self", "name"]


def test_prompt_ensemble_texts_and_weights():
    g = build_groups(NODES[:1], NO_PRUNE)
    texts = hierarchy_texts(g, ["a photo of a {}.", "{}"])
    assert texts == ["a photo of a cat which is a kind of feline.", "cat which is a kind of feline"]
    a, b = unit(1, 0, 0), unit(0, 1, 0)
    np.testing.assert_allclose(member_embeddings(np.stack([a, b]), 2), [unit(1, 1, 0)], rtol=1e-6)


def test_pruning_ranks_words_by_norm_variance_on_a_toy_encoder():
    # norms across 3 templates: a [1,1,1] var 0; b [1,2,3] var 2/3; c [1,3,5] var 8/3; d [2,2,4] var 8/9
    norms = {"a": [1, 1, 1], "b": [1, 2, 3], "c": [1, 3, 5], "d": [2, 2, 4]}
    templates = ["{}", "a {}", "the {}"]
    direction = unit(1, 2, 2)

    def encode_raw(texts: list[str]) -> np.ndarray:  # unnormalised: norm set per (word, template)
        out = []
        for t in texts:
            word = t.split()[-1]
            out.append(norms[word][[tp.replace("{}", word) for tp in templates].index(t)] * direction)
        return np.stack(out)

    words = [w(k, f"n{k}") for k in norms]
    texts = [tp.replace("{}", x.name) for x in words for tp in templates]
    np.testing.assert_allclose(norm_variance(encode_raw(texts), 3), [0, 2 / 3, 8 / 3, 8 / 9], rtol=1e-6)
    assert keep_top_fraction(np.array([0, 2 / 3, 8 / 3, 8 / 9]), 0.5).tolist() == [False, False, True, True]
    assert keep_top_fraction(np.arange(5.0), 0.4).sum() == 2

    # in the pipeline: parent chain b -> c; b is pruned (only c, d survive 50%), so p = c; child a pruned
    nodes = [ClassNode("k", "nk", ((words[1], words[2]),), (words[0], words[3]))]
    enc = FakeEncoder({"k which is a kind of c": unit(1, 0), "d which is a kind of c": unit(0, 1)})
    res = run_hierarchy(np.stack([unit(1, 0)]), np.array([0]), np.ones((1, 1)), nodes, enc,
                        options=HierarchyOptions(keep_fraction=0.5), encode_raw=encode_raw,
                        prune_templates=templates)
    assert res.pruning["word"].tolist() == ["c", "d", "b", "a"]
    assert res.pruning["kept"].tolist() == [True, True, False, False]
    assert sorted(enc.calls[0]) == ["d which is a kind of c", "k which is a kind of c"]
    assert [x.name for x in pruning_words(nodes, include_children=False)] == ["b", "c"]


def test_pruning_without_raw_encoder_is_a_clear_error():
    with pytest.raises(ClipauditError, match="encode_raw"):
        run_hierarchy(X, LABELS, BASE, NODES, FakeEncoder(TABLE), options=HierarchyOptions(keep_fraction=0.4))
    with pytest.raises(ClipauditError, match="parent_policy"):
        HierarchyOptions(parent_policy="last")


def test_cli_end_to_end_on_tiny_model(tmp_path, capsys):
    from analysis.cli import main
    from analysis.results import read_run

    out = tmp_path / "res"
    rc = main(["hierarchy", "-m", "clipaudit-tiny-vit", "-d", "bundled", "--limit", "30", "-t", "simple_imagenet",
               "--results-dir", str(out), "--cache-dir", str(tmp_path / "cache"), "-q", "--max-children", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "low confidence (O)" in text
    record, tables = read_run(next((out / "hierarchy_rerank").glob("*.json")))
    m = record["metrics"]
    pred = tables["predictions"]
    assert m["n"] == len(pred) and m["n_low"] == int(pred["low_confidence"].sum())
    assert m["n_fixed"] - m["n_broken"] == int((pred.pred_after == pred.label).sum()
                                                 - (pred.pred_before == pred.label).sum())
    assert (tables["per_class"]["n_children"] <= 3).all()
    assert record["unmapped_classes"] == []
