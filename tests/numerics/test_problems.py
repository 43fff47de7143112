"""Error figures, priority and prediction monitoring numerics, against values worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labelling.numerics.problems import (
    distribution,
    distribution_shift,
    error_figures,
    priority,
    spread,
)


def test_error_figures_count_false_positives_and_negatives_at_the_threshold() -> None:
    y = [True, True, False, False, False]
    s = [0.9, 0.4, 0.6, 0.1, 0.5]
    figures = error_figures(y, s, 0.5)
    # 0.4 (positive) is missed; 0.6 and 0.5 (negatives) are called positive: ≥ threshold.
    assert (figures.n, figures.positives) == (5, 2)
    assert (figures.false_positives, figures.false_negatives, figures.errors) == (2, 1, 3)
    assert figures.error_rate == pytest.approx(0.6)
    # Pairs (pos, neg) ranked right: 0.9 beats all 3; 0.4 beats only 0.1 → 4 of 6.
    assert figures.auc == pytest.approx(4 / 6)


def test_auc_is_undefined_with_one_class_and_the_error_rate_without_items() -> None:
    assert error_figures([True, True], [0.7, 0.2], 0.5).auc is None
    empty = error_figures(np.zeros(0, bool), np.zeros(0), 0.5)
    assert (empty.n, empty.error_rate, empty.auc) == (0, None, None)


def test_error_figures_refuse_arrays_of_different_lengths() -> None:
    with pytest.raises(ValueError):
        error_figures([True], [0.1, 0.2], 0.5)


def test_priority_is_the_error_rate_times_the_harm() -> None:
    assert priority(0.25, 4) == pytest.approx(1.0)
    assert priority(None, 4) is None


def test_spread_from_running_sums() -> None:
    values = np.array([0.5, 0.7, 0.9])
    got = spread(3, values.sum(), (values**2).sum())
    assert got.mean == pytest.approx(values.mean())
    assert got.std == pytest.approx(values.std())
    assert math.isnan(spread(0, 0.0, 0.0).mean)


def test_distribution_shift_is_the_total_variation_distance() -> None:
    assert distribution([1, 3]).tolist() == [0.25, 0.75]
    assert distribution_shift([50, 50], [70, 30]) == pytest.approx(0.2)
    assert distribution_shift([10, 0], [0, 5]) == pytest.approx(1.0)
    assert math.isnan(distribution_shift([0, 0], [1, 1]))
    with pytest.raises(ValueError):
        distribution_shift([1, 2], [1, 2, 3])
