"""Candidate descriptors, Sinkhorn plan (POT) and the relevance ordering."""

from __future__ import annotations

import numpy as np

from analysis.concepts.matching import (
    assign_descriptors,
    candidate_descriptors,
    relevance_filter,
    relevance_order,
    sinkhorn_plan,
    topk_per_row,
)


def reference_sinkhorn(C: np.ndarray, epsilon: float = 1.0, iterations: int = 1000) -> np.ndarray:
    """The released code's loop, written out: all-ones marginals, rows then columns, 1000 times."""
    P = np.exp(C * epsilon)
    for _ in range(iterations):
        P = P / P.sum(axis=1, keepdims=True)
        P = P / P.sum(axis=0, keepdims=True)
    return P


def test_sinkhorn_plan_has_uniform_marginals():
    rng = np.random.default_rng(0)
    sim = rng.uniform(-0.2, 0.4, size=(4, 9))
    plan = sinkhorn_plan(sim)
    np.testing.assert_allclose(plan.sum(axis=1), np.full(4, 1 / 4), atol=1e-7)
    np.testing.assert_allclose(plan.sum(axis=0), np.full(9, 1 / 9), atol=1e-7)


def test_sinkhorn_readout_equals_reference_loop():
    rng = np.random.default_rng(1)
    for n, m in ((3, 7), (5, 5), (5, 40)):
        sim = rng.uniform(0.1, 0.35, size=(n, m))
        ours = sinkhorn_plan(sim)
        ref = reference_sinkhorn(2.5 * sim)
        # same plan up to a per-row scale
        np.testing.assert_allclose(ours / ours.sum(1, keepdims=True), ref / ref.sum(1, keepdims=True), rtol=1e-6)
        np.testing.assert_array_equal(topk_per_row(ours, 3), topk_per_row(ref, 3))


def test_sinkhorn_is_not_raw_argmax():
    # Column 0 is everyone's favourite; OT spreads mass so rows do not all pick it first.
    sim = np.array([[0.9, 0.8, 0.1], [0.9, 0.1, 0.8], [0.9, 0.85, 0.1]])
    plan = sinkhorn_plan(sim, scale=20.0, reg=1.0)
    assert len(set(plan.argmax(axis=1).tolist())) > 1
    assert len(set(sim.argmax(axis=1).tolist())) == 1


def test_candidates_are_intersection_of_topk():
    sim = np.array([[0.9, 0.8, 0.7, 0.1], [0.1, 0.8, 0.9, 0.7]])
    # top-2 of row 0: {0, 1}; of row 1: {2, 1} -> {1}; top-3: {0,1,2} & {2,1,3} -> {1, 2}
    np.testing.assert_array_equal(candidate_descriptors(sim, top_k=2), [1])
    np.testing.assert_array_equal(candidate_descriptors(sim, top_k=3), [1, 2])
    assert candidate_descriptors(np.zeros((0, 4))).size == 0


def test_relevance_filter_by_mean_minus_offset():
    image_sim = np.array([0.30, 0.20, 0.25, 0.10, 0.29])
    cand = np.array([0, 1, 2, 4])  # mean over candidates = 0.26
    np.testing.assert_array_equal(relevance_filter(cand, image_sim, mean_offset=0.02), [0, 2, 4])
    np.testing.assert_array_equal(relevance_filter(cand, image_sim, mean_offset=0.0), [0, 4])
    assert relevance_filter(np.array([], int), image_sim).size == 0


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_assign_handles_empty_candidate_sets():
    rng = np.random.default_rng(0)
    desc = unit(rng.normal(size=(6, 8)))
    # two concepts whose top-1 descriptors differ: the top-1 intersection is empty
    concepts = desc[[0, 3]]
    out = assign_descriptors(concepts, desc, unit(rng.normal(size=8)), top_k=1)
    assert out == [[], []]
    assert assign_descriptors(np.zeros((0, 8)), desc, desc[0]) == []


def test_assign_single_candidate_and_plain_topk():
    desc = unit(np.array([[1.0, 0, 0], [0, 1.0, 0], [0.9, 0.1, 0], [0, 0, 1.0]]))
    concepts = desc[[0, 2]]
    # top-1 of each concept differ (0 vs 2) -> empty intersection
    assert assign_descriptors(concepts, desc, desc[0], top_k=1) == [[], []]
    # one shared candidate: every concept gets it
    assert assign_descriptors(desc[[0, 0]], desc, desc[0], top_k=1) == [[0], [0]]
    # top-2 intersection {0, 2}; each concept ranks its own descriptor first
    assert assign_descriptors(concepts, desc, desc[0], top_k=2, mean_offset=1.0) == [[0, 2], [2, 0]]
    raw = assign_descriptors(concepts, desc, desc[0], use_ot=False, per_concept=2)
    assert raw == [[0, 2], [2, 0]]


def test_relevance_order_dedups_and_sorts():
    desc = unit(np.array([[1.0, 0], [0, 1.0], [1.0, 1.0]]))
    image = unit(np.array([1.0, 0.2]))
    order, scores = relevance_order([[1, 2], [2, 0], [1]], desc, image)
    assert order == [0, 2, 1]
    np.testing.assert_allclose(scores, 2.5 * desc[[0, 2, 1]] @ image)
    assert relevance_order([[], []], desc, image) == ([], [])
