"""ROC / PR curves and threshold choosers on a worked example computed by hand.

The example: ten labelled scores, five positives and five negatives, with one tie (0.8) that
holds a positive and a negative.

    score  0.95 0.90 0.80 0.80 0.70 0.60 0.55 0.40 0.30 0.10
    label    1    1    1    0    1    0    0    1    0    0

Predicting positive when s >= t, at each distinct score t (the tie at 0.8 is one step):

    t      0.95 0.90 0.80 0.70 0.60 0.55 0.40 0.30 0.10
    TP        1    2    3    4    4    4    5    5    5
    FP        0    0    1    1    2    3    3    4    5
    tpr     0.2  0.4  0.6  0.8  0.8  0.8  1.0  1.0  1.0     (= recall = TP / 5)
    fpr     0.0  0.0  0.2  0.2  0.4  0.6  0.6  0.8  1.0     (= FP / 5)
    prec   1.00 1.00 0.75 0.80 0.67 0.57 .625 0.56 0.50     (= TP / (TP + FP))
"""

import math
from typing import Any

import numpy as np
import pytest

from labelling.numerics.thresholds import (
    ThresholdChoice,
    average_precision,
    precision_recall_curve,
    roc_auc,
    roc_curve,
    threshold_for_cost,
    threshold_for_precision,
    threshold_for_recall,
)

S = [0.95, 0.9, 0.8, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.1]
Y = [1, 1, 1, 0, 1, 0, 0, 1, 0, 0]
STEPS = [0.95, 0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.1]


def test_roc_curve_has_one_point_per_distinct_score_after_the_origin() -> None:
    fpr, tpr, thresholds = roc_curve(Y, S)
    assert thresholds.tolist() == [math.inf, *STEPS]
    assert fpr == pytest.approx([0, 0, 0, 0.2, 0.2, 0.4, 0.6, 0.6, 0.8, 1])
    assert tpr == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 0.8, 0.8, 1, 1, 1])


def test_roc_auc_of_the_worked_example_is_0_82() -> None:
    # Trapezoids over fpr steps: 0.2 x (0.4 + 0.6) / 2 = 0.1;  0.2 x 0.8 = 0.16 twice;
    # 0.2 x 1 = 0.2 twice;  total 0.1 + 0.32 + 0.4 = 0.82
    assert roc_auc(Y, S) == pytest.approx(0.82)


def test_roc_auc_equals_the_mann_whitney_statistic() -> None:
    # Pairs (positive, negative) where the positive scores higher, ties counting one half:
    # 0.95 -> 5, 0.9 -> 5, 0.8 -> 4 + 0.5 (tie), 0.7 -> 4, 0.4 -> 2;  U = 20.5;  U / (5 x 5) = 0.82
    assert roc_auc(Y, S) == pytest.approx(20.5 / 25)


def test_roc_auc_matches_mann_whitney_on_random_tied_scores() -> None:
    rng = np.random.default_rng(2)
    y = rng.random(300) < 0.3
    s = rng.random(300).round(1)  # few distinct values, so many ties
    pos, neg = s[y], s[~y]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(y, s) == pytest.approx(wins / (pos.size * neg.size))


def test_precision_recall_curve_of_the_worked_example() -> None:
    precision, recall, thresholds = precision_recall_curve(Y, S)
    assert thresholds.tolist() == STEPS
    assert recall == pytest.approx([0.2, 0.4, 0.6, 0.8, 0.8, 0.8, 1, 1, 1])
    assert precision == pytest.approx([1, 1, 3 / 4, 4 / 5, 4 / 6, 4 / 7, 5 / 8, 5 / 9, 5 / 10])


def test_average_precision_is_the_step_sum_of_recall_gained_times_precision() -> None:
    # 0.2 x 1 + 0.2 x 1 + 0.2 x 0.75 + 0.2 x 0.8 + 0.2 x 0.625 = 0.2 + 0.2 + 0.15 + 0.16 + 0.125
    assert average_precision(Y, S) == pytest.approx(0.835)


def test_equal_costs_choose_the_threshold_with_fewest_errors() -> None:
    # FP + FN per step (FN = 5 - TP):  +inf 5, 0.95 4, 0.9 3, 0.8 3, 0.7 2, 0.6 3, 0.55 4,
    # 0.4 3, 0.3 4, 0.1 5  -> 0.7 with cost 2 (0.2 per item)
    choice = threshold_for_cost(Y, S, cost_fp=1, cost_fn=1)
    assert choice == ThresholdChoice(
        threshold=0.7, precision=0.8, recall=0.8, fpr=0.2, tpr=0.8, cost=2.0, expected_cost=0.2
    )


def test_dear_false_negatives_lower_the_threshold() -> None:
    # FP + 5 FN:  0.7 -> 1 + 5 = 6;  0.6 -> 2 + 5 = 7;  0.4 -> 3 + 0 = 3;  0.3 -> 4;  0.1 -> 5
    choice = threshold_for_cost(Y, S, cost_fp=1, cost_fn=5)
    assert (choice.threshold, choice.cost, choice.recall) == (0.4, 3.0, 1.0)
    assert choice.precision == pytest.approx(0.625)


def test_a_cost_tie_goes_to_the_higher_threshold() -> None:
    # 2 FP + FN:  +inf 5, 0.95 4, 0.9 3, 0.8 4, 0.7 2 + 1 = 3, 0.6 5  -> 0.9 and 0.7 tie at 3
    choice = threshold_for_cost(Y, S, cost_fp=2, cost_fn=1)
    assert (choice.threshold, choice.cost, choice.fpr) == (0.9, 3.0, 0.0)


def test_predicting_nothing_wins_when_false_positives_are_dear_enough() -> None:
    # the top score is a negative: +inf costs 1 FN = 1;  0.9 costs 2 + 1 = 3;  0.1 costs 2
    choice = threshold_for_cost([0, 1], [0.9, 0.1], cost_fp=2, cost_fn=1)
    assert choice.threshold == math.inf
    assert (choice.recall, choice.fpr, choice.cost, choice.expected_cost) == (0, 0, 1.0, 0.5)
    assert math.isnan(choice.precision)


@pytest.mark.parametrize(
    ("target", "threshold", "recall"),
    [(1.0, 0.9, 0.4), (0.8, 0.7, 0.8), (0.75, 0.7, 0.8), (0.6, 0.4, 1.0), (0.5, 0.1, 1.0)],
)
def test_threshold_for_precision_is_the_lowest_reaching_the_target(
    target: float, threshold: float, recall: float
) -> None:
    # precision >= 0.75 at 0.95, 0.9, 0.8 (0.75) and 0.7 (0.8): the lowest is 0.7, recall 0.8;
    # >= 0.6 also at 0.6 (0.67) and 0.4 (0.625): the lowest is 0.4, recall 1
    choice = threshold_for_precision(Y, S, target)
    assert choice is not None
    assert (choice.threshold, choice.recall) == (threshold, recall)
    assert choice.precision >= target
    assert choice.cost is None


def test_threshold_for_precision_is_none_when_the_target_is_unreachable() -> None:
    # precision at 0.9 is 0 / 1 and at 0.1 is 1 / 2: 0.6 is never reached
    assert threshold_for_precision([0, 1], [0.9, 0.1], 0.6) is None


@pytest.mark.parametrize(
    ("target", "threshold"),
    [(0.2, 0.95), (0.5, 0.8), (0.6, 0.8), (0.8, 0.7), (0.9, 0.4), (1.0, 0.4)],
)
def test_threshold_for_recall_is_the_highest_reaching_the_target(
    target: float, threshold: float
) -> None:
    # recall 0.2, 0.4, 0.6, 0.8, ... at 0.95, 0.9, 0.8, 0.7, ...; 1.0 first at 0.4
    choice = threshold_for_recall(Y, S, target)
    assert choice.threshold == threshold
    assert choice.recall >= target


def test_the_tie_at_0_8_is_one_threshold_step() -> None:
    choice = threshold_for_recall(Y, S, 0.6)
    # both 0.8 items are predicted positive together: TP 3, FP 1
    assert (choice.precision, choice.fpr) == (0.75, 0.2)


@pytest.mark.parametrize(
    "call",
    [roc_curve, roc_auc, lambda y, s: threshold_for_recall(y, s, 0.5)],
)
def test_a_single_class_is_refused_for_roc_and_thresholds(call: Any) -> None:
    with pytest.raises(ValueError, match=r"^y: .*both positive and negative"):
        call([1, 1, 1], [0.2, 0.5, 0.9])
    with pytest.raises(ValueError, match=r"^y: .*both positive and negative"):
        call([0, 0], [0.2, 0.5])


def test_precision_recall_needs_a_positive_but_not_a_negative() -> None:
    with pytest.raises(ValueError, match=r"^y: .*at least one positive"):
        average_precision([0, 0], [0.2, 0.5])
    assert average_precision([1, 1], [0.2, 0.5]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("y", "s", "message"),
    [
        ([0, 2], [0.1, 0.2], "^y: "),
        ([], [], "^y: "),
        ([[0, 1]], [[0.1, 0.2]], "^y: "),
        ([0, 1], [0.1], "^s: "),
        ([0, 1], [0.1, float("nan")], "^s: "),
        ([0, 1], ["a", "b"], "^s: "),
    ],
)
def test_malformed_labels_or_scores_are_refused(y: Any, s: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        roc_auc(y, s)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cost_fp": -1, "cost_fn": 1}, "^cost_fp: "),
        ({"cost_fp": 1, "cost_fn": float("inf")}, "^cost_fn: "),
    ],
)
def test_bad_costs_are_refused(kwargs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        threshold_for_cost(Y, S, **kwargs)


@pytest.mark.parametrize("target", [0.0, 1.5, -0.1])
def test_targets_outside_zero_to_one_are_refused(target: float) -> None:
    with pytest.raises(ValueError, match=r"^target: "):
        threshold_for_precision(Y, S, target)
    with pytest.raises(ValueError, match=r"^target: "):
        threshold_for_recall(Y, S, target)


def test_boolean_labels_work_like_zero_and_one() -> None:
    assert roc_auc(np.array(Y, dtype=bool), S) == pytest.approx(0.82)
