"""One stable top-k order: partial selection against a full stable sort, sklearn without ties, loops with ties."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import top_k_accuracy_score

import analysis.metrics as metrics_mod
from analysis._checks import ClipauditError
from analysis.metrics import classification_summary, top_k_indices, topk_accuracy
from analysis.zeroshot import zeroshot_table


def _loop_order(row: np.ndarray) -> list[int]:
    """The documented order, written out: higher score first, lower class index among equal scores."""
    return sorted(range(len(row)), key=lambda j: (-row[j], j))


@pytest.mark.parametrize("seed, levels", [(0, 2), (1, 3), (2, 7)])
def test_top_k_matches_a_full_stable_sort_on_rows_full_of_ties(seed, levels):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, levels, size=(120, 31)).astype(np.float32)  # every row has many exact ties
    s[0] = 1.0  # a row where every class ties
    s[1, :] = 0.0
    s[1, [4, 9, 30]] = 2.0  # fewer classes above the tie than k for k > 3
    full = np.argsort(-s, axis=1, kind="stable")
    for k in range(1, 32):
        np.testing.assert_array_equal(top_k_indices(s, k), full[:, :k], err_msg=f"k={k}")
    for i in (0, 1, 57):  # and the order is the documented one
        assert top_k_indices(s, 10)[i].tolist() == _loop_order(s[i])[:10]


def test_top_k_in_chunks_and_with_nan(monkeypatch):
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, size=(50, 12)).astype(np.float64)
    s[5, 2] = np.nan
    s[6, :] = np.nan
    expected = np.argsort(-np.where(np.isnan(s), -np.inf, s), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(top_k_indices(s, 5), expected)
    monkeypatch.setattr(metrics_mod, "_CHUNK_ELEMENTS", 24)  # two rows per chunk
    np.testing.assert_array_equal(top_k_indices(s, 5), expected)
    assert top_k_indices(s, 1)[6, 0] == 0 and top_k_indices(s, 1)[5, 0] != 2
    with pytest.raises(ClipauditError, match="k must be an integer in 1..12"):
        top_k_indices(s, 13)


@pytest.mark.parametrize("c", [3, 5, 10, 40])
def test_acc_at_k_equals_sklearn_without_ties(c):
    rng = np.random.default_rng(c)
    scores = rng.normal(size=(400, c))  # continuous: no exact ties
    labels = rng.integers(0, c, 400)
    for k in range(1, min(c, 6)):
        assert topk_accuracy(scores, labels, k) == pytest.approx(
            top_k_accuracy_score(labels, scores, k=k, labels=np.arange(c)))


def _tied_problem(n=400, c=9, d=5, seed=0):
    """Embeddings on a 0.5 grid (dot products exact in float32) with class 2 duplicated as 5 and 7."""
    rng = np.random.default_rng(seed)
    w = rng.integers(0, 3, size=(c, d)) * 0.5
    w[:, 0] += 0.5  # no all-zero class
    w[5] = w[2]
    w[7] = w[2]  # like ImageNet's two "missile" classes: identical zero-shot weights
    p = np.where(np.isin(np.arange(c), [2, 5, 7]), 3.0, 1.0)
    labels = rng.choice(c, size=n, p=p / p.sum())
    f = np.clip(w[labels] + rng.integers(-1, 2, size=(n, d)) * 0.5, 0, 1.5)
    return f.astype(np.float32), w.astype(np.float32), labels


def test_exact_ties_acc1_correct_column_and_recall_agree_with_a_loop():
    f, w, labels = _tied_problem()
    table, metrics, z = zeroshot_table(f, labels, w, scale=1.0)
    n, c = z.shape
    loop_pred = np.array([_loop_order(z[i])[0] for i in range(n)])
    loop_top5 = [_loop_order(z[i])[:5] for i in range(n)]
    # the data exercise the rule: the label ties for the top with a lower class in some rows
    tied_top = [i for i in range(n) if (z[i] == z[i].max()).sum() > 1 and z[i, labels[i]] == z[i].max()]
    assert any(labels[i] != loop_pred[i] for i in tied_top)
    higher_index_acc1 = np.mean([max(np.flatnonzero(z[i] == z[i].max())) == labels[i] for i in range(n)])
    assert higher_index_acc1 != pytest.approx(np.mean(loop_pred == labels))  # the two rules differ here

    np.testing.assert_array_equal(table["pred"], loop_pred)
    assert table["top5"].tolist() == loop_top5
    assert metrics["acc1"] == pytest.approx(np.mean(loop_pred == labels)) == pytest.approx(table["correct"].mean())
    assert metrics["acc5"] == pytest.approx(np.mean([labels[i] in loop_top5[i] for i in range(n)]))
    recalls = [np.mean(loop_pred[labels == k] == k) for k in np.unique(labels)]
    assert metrics["mean_per_class_recall"] == pytest.approx(np.mean(recalls))
    # the standalone functions read the same order as the table
    assert topk_accuracy(z, labels, 1) == pytest.approx(metrics["acc1"])
    assert classification_summary(z, labels) == pytest.approx(metrics)


def test_confidence_predictions_follow_the_same_order():
    from analysis.confidence import self_consistency_table

    f, w, labels = _tied_problem(seed=1)
    table, _, z = zeroshot_table(f, labels, w, scale=1.0)
    t = self_consistency_table(f, np.stack([w, w]), w, labels=labels)  # every classifier is w itself
    np.testing.assert_array_equal(t["pred_name_only"], table["pred"])  # the name-only classifier is w
