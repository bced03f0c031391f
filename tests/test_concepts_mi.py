"""Mutual information variants, removal curves and AUCs against hand computations and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mutual_info_score

from analysis._checks import ClipauditError
from analysis.concepts.mutual_info import (
    auc_reference,
    auc_trapezoid,
    average_curves,
    match_table,
    mutual_information,
    removal_curve,
)

X = [10, 4, 7, 99, 3]  # vision side, most relevant first (N = 5)
Y = [7, 1, 2, 10, 5, 6, 3, 8]  # text side (M = 8); shared ids: 10, 7, 3 (k = 3)


def test_released_variant_hand_computation():
    # table has k=3 ones -> p = 1/3 each -> H = ln 3 (up to the 1e-9 guard) -> ln 5 + ln 8 + ln 3
    assert mutual_information(X, Y) == pytest.approx(np.log(5) + np.log(8) + np.log(3), abs=1e-6)


def test_textbook_variant_hand_computation_and_sklearn():
    # p_ij = 1/3 on 3 cells; marginals 1/3 on matched rows/cols -> sum 1/3 ln((1/3)/(1/9)) * 3 = ln 3
    assert mutual_information(X, Y, variant="textbook") == pytest.approx(np.log(3))
    table = match_table(X, Y)
    assert table.shape == (5, 8) and table.sum() == 3
    assert mutual_information(X, Y, variant="textbook") == pytest.approx(
        mutual_info_score(None, None, contingency=table))


def test_textbook_equals_label_based_sklearn_on_paired_samples():
    # The match table is a contingency table of (row, column) pairs: sklearn on those labels agrees.
    rows, cols = np.nonzero(match_table(X, Y))
    assert mutual_information(X, Y, variant="textbook") == pytest.approx(mutual_info_score(rows, cols))


def test_no_overlap_gives_zero_and_bad_variant_raises():
    assert mutual_information([1, 2], [3, 4]) == 0.0
    assert mutual_information([1, 2], [3, 4], variant="textbook") == 0.0
    assert mutual_information([], [3, 4]) == 0.0
    with pytest.raises(ClipauditError, match="variant"):
        mutual_information(X, Y, variant="paper")


def test_removal_curve_most_relevant_first():
    curve = removal_curve(X, Y)
    ln = np.log
    expected = [ln(5 * 8 * 3), ln(5 * 8 * 2), ln(5 * 8 * 2), ln(5 * 8 * 1), ln(5 * 8 * 1), 0.0]
    np.testing.assert_allclose(curve, expected, atol=1e-6)
    textbook = removal_curve(X, Y, variant="textbook")
    np.testing.assert_allclose(textbook, [ln(3), ln(2), ln(2), 0.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_array_equal(removal_curve([], Y), [0.0])


def test_average_curves_zero_pads():
    avg = average_curves([np.array([4.0, 2.0, 0.0]), np.array([2.0, 0.0])])
    np.testing.assert_allclose(avg, [3.0, 1.0, 0.0])
    assert average_curves([]).size == 0


def test_auc_on_known_curve():
    curve = np.array([4.0, 3.0, 2.0, 1.0, 0.0])
    assert auc_reference(curve) == pytest.approx(2.0)  # left Riemann: (4+3+2+1+0) / 5
    assert auc_trapezoid(curve) == pytest.approx(2.0)  # straight line from 4 to 0 over [0, 1]
    step = np.array([1.0, 1.0, 0.0])
    assert auc_reference(step) == pytest.approx(2 / 3)
    assert auc_trapezoid(step) == pytest.approx(0.5 * 1.0 + 0.5 * 0.5)
    assert auc_reference(np.zeros(0)) == 0.0 and auc_trapezoid(np.array([3.0])) == 3.0
