"""Queue-policy selection: each rule alone, rule order, budget, eligibility and determinism."""

import math
from typing import Any

import numpy as np
import pytest

from labelling.numerics.selection import SelectionResult, select_items
from labelling.numerics.uncertainty import entropy, margin_uncertainty

NAN = float("nan")


def binary(positive: list[float]) -> np.ndarray:
    """A binary probability matrix whose column 1 is the positive class."""
    p = np.array(positive)
    return np.column_stack([1.0 - p, p])


# p(positive) per row, and |p - 0.5|:  0.05, 0.2, 0.02, 0.08, 0.4, 0.0, 0.4
SEVEN = binary([0.45, 0.7, 0.52, 0.58, 0.9, 0.5, 0.1])
NEAR = {"rule": "near_threshold", "band": 0.1}


def run(P: np.ndarray, rules: list[dict[str, Any]], **kwargs: Any) -> SelectionResult:
    """select_items with the binary defaults these tests use."""
    kwargs.setdefault("positive_index", 1)
    kwargs.setdefault("seed", 7)
    return select_items(P, rules, **kwargs)


def test_near_threshold_takes_items_within_the_band_closest_first() -> None:
    # within 0.1 of 0.5: row 5 (0.0), row 2 (0.02), row 0 (0.05), row 3 (0.08)
    result = run(SEVEN, [NEAR])
    assert result.indices.tolist() == [5, 2, 0, 3]
    assert result.scores == pytest.approx([0.0, 0.02, 0.05, 0.08])
    assert result.rule_index.tolist() == [0, 0, 0, 0]
    assert result.rule_counts.tolist() == [4]


def test_near_threshold_uses_the_projects_threshold() -> None:
    # |p - 0.7|: 0.25, 0.0, 0.18, 0.12, 0.2, 0.2, 0.6  -> only row 1 within 0.1
    result = run(SEVEN, [NEAR], threshold=0.7)
    assert result.indices.tolist() == [1]


def test_near_threshold_on_a_multi_class_problem_uses_the_top_two_margin() -> None:
    # margins: 0.5 - 0.3 = 0.2; 0.4 - 0.35 = 0.05; 0.9 - 0.05 = 0.85; 0.34 - 0.33 = 0.01
    P = np.array([[0.3, 0.5, 0.2], [0.4, 0.35, 0.25], [0.9, 0.05, 0.05], [0.34, 0.33, 0.33]])
    result = select_items(P, [NEAR], seed=0)
    assert result.indices.tolist() == [3, 1]
    assert result.scores == pytest.approx([0.01, 0.05])


def test_uncertain_entropy_takes_the_top_n_most_uncertain_first() -> None:
    # entropy peaks at p = 0.5 (row 5, ln 2), then p = 0.52 (row 2), then p = 0.45 (row 0)
    result = run(SEVEN, [{"rule": "uncertain", "measure": "entropy", "top": 3}])
    assert result.indices.tolist() == [5, 2, 0]
    assert result.scores == pytest.approx(entropy(SEVEN)[[5, 2, 0]])
    assert result.scores[0] == pytest.approx(math.log(2))


def test_uncertain_margin_above_takes_every_item_above_and_scores_one_minus_margin() -> None:
    # 1 - |2p - 1|: 0.9, 0.6, 0.96, 0.84, 0.2, 1.0, 0.2  -> above 0.85: rows 5, 2, 0
    result = run(SEVEN, [{"rule": "uncertain", "measure": "margin", "above": 0.85}])
    assert result.indices.tolist() == [5, 2, 0]
    assert result.scores == pytest.approx([1.0, 0.96, 0.9])
    assert result.scores == pytest.approx(margin_uncertainty(SEVEN)[[5, 2, 0]])


def test_uncertain_least_confidence_with_top_and_above_keeps_both_limits() -> None:
    # 1 - max(p, 1 - p): 0.45, 0.3, 0.48, 0.42, 0.1, 0.5, 0.1 -> above 0.4: rows 5, 2, 0, 3; top 2
    rule = {"rule": "uncertain", "measure": "least_confidence", "above": 0.4, "top": 2}
    result = run(SEVEN, [rule])
    assert result.indices.tolist() == [5, 2]
    assert result.scores == pytest.approx([0.5, 0.48])


def test_ties_are_broken_by_index_order() -> None:
    P = binary([0.9, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5])
    result = run(P, [{"rule": "uncertain", "measure": "entropy", "top": 3}])
    assert result.indices.tolist() == [1, 2, 4]
    result = run(P, [NEAR], budget=2)
    assert result.indices.tolist() == [1, 2]


def test_uncertain_mutual_information_skips_rows_without_samples() -> None:
    P = np.full((4, 2), 0.5)
    samples = np.array(
        [
            [[1.0, 0.0], [0.0, 1.0]],  # BALD ln 2
            [[NAN, NAN], [NAN, NAN]],  # no samples: never taken
            [[0.5, 0.5], [0.5, 0.5]],  # BALD 0
            [[0.8, 0.2], [0.4, 0.6]],  # BALD 0.086305 (see test_uncertainty)
        ]
    )
    rule = {"rule": "uncertain", "measure": "mutual_information", "top": 10}
    result = run(P, [rule], samples=samples)
    assert result.indices.tolist() == [0, 3, 2]
    assert result.scores == pytest.approx([math.log(2), 0.086305, 0.0], abs=1e-6)


def test_mutual_information_needs_samples_on_some_eligible_row() -> None:
    rule = {"rule": "uncertain", "measure": "mutual_information", "top": 1}
    samples = np.array([[[0.5, 0.5]], [[NAN, NAN]]])
    with pytest.raises(ValueError, match=r"^samples: required by rules\[0\]"):
        run(np.full((2, 2), 0.5), [rule])
    with pytest.raises(ValueError, match=r"^samples: no eligible row has samples"):
        run(np.full((2, 2), 0.5), [rule], samples=samples, eligible=np.array([False, True]))


# Ten confident rows (p = 0.99) then five unsure ones (p = 0.6).
CONFIDENT = binary([0.99] * 10 + [0.6] * 5)


def test_confident_takes_a_random_fraction_of_the_confident_items() -> None:
    # 0.2 x 10 confident items = 2
    rule = {"rule": "confident", "min_confidence": 0.97, "fraction": 0.2}
    result = run(CONFIDENT, [rule])
    assert result.rule_counts.tolist() == [2]
    assert set(result.indices.tolist()) <= set(range(10))
    assert result.scores == pytest.approx([0.99, 0.99])
    assert result.indices.tolist() == sorted(result.indices.tolist())


@pytest.mark.parametrize(("fraction", "expected"), [(0.25, 3), (0.04, 0), (0.05, 1), (1.0, 10)])
def test_confident_rounds_the_fraction_half_up(fraction: float, expected: int) -> None:
    # 0.25 x 10 = 2.5 -> 3;  0.04 x 10 = 0.4 -> 0;  0.05 x 10 = 0.5 -> 1;  1.0 x 10 = 10
    rule = {"rule": "confident", "min_confidence": 0.97, "fraction": fraction}
    assert run(CONFIDENT, [rule]).rule_counts.tolist() == [expected]


def test_confident_counts_its_fraction_over_all_eligible_confident_items() -> None:
    # least confidence: 0.4 for the unsure rows, 0.01 for the confident ones; top 12 takes the five
    # unsure rows and confident rows 0-6, leaving 3. 0.3 x 10 confident = 3, so all 3 are taken.
    rules = [
        {"rule": "uncertain", "measure": "least_confidence", "top": 12},
        {"rule": "confident", "min_confidence": 0.97, "fraction": 0.3},
    ]
    result = run(CONFIDENT, rules)
    assert result.rule_counts.tolist() == [12, 3]
    assert result.indices[12:].tolist() == [7, 8, 9]


def test_random_takes_a_fraction_of_all_eligible_items_with_score_zero() -> None:
    # 0.025 x 200 = 5
    P = binary(np.linspace(0.0, 1.0, 200).tolist())
    result = run(P, [{"rule": "random", "fraction": 0.025}])
    assert result.rule_counts.tolist() == [5]
    assert result.scores.tolist() == [0.0] * 5
    assert np.unique(result.indices).size == 5


def test_a_later_rule_never_takes_an_item_an_earlier_rule_took() -> None:
    result = run(SEVEN, [NEAR, {"rule": "random", "fraction": 1.0}])
    assert result.rule_counts.tolist() == [4, 3]
    assert result.indices[:4].tolist() == [5, 2, 0, 3]
    assert sorted(result.indices[4:].tolist()) == [1, 4, 6]
    assert result.rule_index.tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_rules_fill_in_order_and_stop_when_the_budget_is_spent() -> None:
    # near_threshold takes 4; the entropy rule gets the one slot left and fills it with its best
    # remaining item (row 1, p = 0.7, beats row 4 and row 6 at distance 0.4); random gets none.
    rules = [
        NEAR,
        {"rule": "uncertain", "measure": "entropy", "top": 2},
        {"rule": "random", "fraction": 1.0},
    ]
    result = run(SEVEN, rules, budget=5)
    assert result.indices.tolist() == [5, 2, 0, 3, 1]
    assert result.rule_counts.tolist() == [4, 1, 0]


def test_a_rule_that_would_overrun_the_budget_keeps_only_its_best_items() -> None:
    result = run(SEVEN, [NEAR, {"rule": "random", "fraction": 1.0}], budget=3)
    assert result.indices.tolist() == [5, 2, 0]
    assert result.rule_counts.tolist() == [3, 0]


def test_a_zero_budget_selects_nothing() -> None:
    result = run(SEVEN, [NEAR], budget=0)
    assert result.indices.size == result.scores.size == result.rule_index.size == 0
    assert result.rule_counts.tolist() == [0]


def test_only_eligible_items_are_selected_and_indices_refer_to_all_rows() -> None:
    eligible = np.array([True, True, False, True, True, False, True])
    result = run(SEVEN, [NEAR, {"rule": "random", "fraction": 1.0}], eligible=eligible)
    assert result.indices[:2].tolist() == [0, 3]
    assert sorted(result.indices.tolist()) == [0, 1, 3, 4, 6]


def test_the_random_fraction_is_of_eligible_items_not_all_rows() -> None:
    P = binary([0.5] * 100)
    eligible = np.arange(100) < 40
    # 0.05 x 40 eligible = 2 (not 0.05 x 100 = 5)
    result = run(P, [{"rule": "random", "fraction": 0.05}], eligible=eligible)
    assert result.rule_counts.tolist() == [2]
    assert result.indices.max() < 40


@pytest.mark.parametrize("n_eligible", [49, 60])  # under half: rows copied out; else masked
def test_random_draws_follow_one_recipe_whether_eligible_rows_are_copied_out_or_masked(
    n_eligible: int,
) -> None:
    # The draw is Generator.choice over the free eligible rows in index order, so both code paths
    # must equal this reference: round(0.5 x 49) = 25 (24.5 rounds up); 0.5 x 60 = 30.
    P = binary([0.5] * 100)
    eligible = np.arange(100) >= 100 - n_eligible
    result = run(P, [{"rule": "random", "fraction": 0.5}], eligible=eligible, seed=3)
    wanted = math.floor(0.5 * n_eligible + 0.5)
    picks = np.random.default_rng(3).choice(n_eligible, size=wanted, replace=False)
    expected = np.flatnonzero(eligible)[np.sort(picks)]
    assert result.indices.tolist() == expected.tolist()


def test_selection_is_deterministic_given_the_seed() -> None:
    rng = np.random.default_rng(3)
    P = binary(rng.random(5000).tolist())
    rules = [
        {"rule": "confident", "min_confidence": 0.9, "fraction": 0.1},
        {"rule": "random", "fraction": 0.05},
    ]
    first, second = run(P, rules, seed=11), run(P, rules, seed=11)
    from_generator = run(P, rules, seed=np.random.default_rng(11))
    assert first.indices.tolist() == second.indices.tolist() == from_generator.indices.tolist()
    assert first.indices.tolist() != run(P, rules, seed=12).indices.tolist()


@pytest.mark.parametrize("share", [0.3, 0.8])  # sparse eligibility copies rows out, dense masks
def test_top_n_selection_matches_a_full_sort_on_data_with_many_ties(share: float) -> None:
    # Rounded probabilities make many equal scores, so the argpartition cut lands inside ties.
    rng = np.random.default_rng(5)
    raw = rng.dirichlet(np.ones(4), size=3000).round(1)
    raw[:, 0] += 1.0 - raw.sum(axis=1)
    P = raw[(raw >= 0).all(axis=1)]
    eligible = rng.random(P.shape[0]) < share
    result = select_items(
        P, [{"rule": "uncertain", "measure": "entropy", "top": 100}], eligible=eligible, seed=0
    )
    rows = np.flatnonzero(eligible)
    scores = entropy(P)[rows]
    expected = rows[np.lexsort((rows, -scores))][:100]
    assert result.indices.tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([{"rule": "sometimes"}], r"rules\[0\].rule"),
        ([NEAR, {"rule": "near_threshold"}], r"rules\[1\].band: required"),
        ([{"rule": "near_threshold", "band": -0.1}], r"rules\[0\].band"),
        ([{"rule": "uncertain", "measure": "variance", "top": 1}], r"rules\[0\].measure"),
        ([{"rule": "uncertain", "measure": "entropy"}], "top` or `above"),
        ([{"rule": "uncertain", "measure": "entropy", "top": True}], r"rules\[0\].top"),
        ([{"rule": "uncertain", "measure": "entropy", "top": -1}], r"rules\[0\].top"),
        ([{"rule": "confident", "min_confidence": 0.9, "fraction": 2}], r"rules\[0\].fraction"),
        ([{"rule": "random", "fraction": "0.1"}], r"rules\[0\].fraction"),
        ("near_threshold", "^rules: "),
        ([["near_threshold"]], r"^rules\[0\]: "),
    ],
)
def test_a_malformed_rule_is_refused_naming_it(rules: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(SEVEN, rules)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"budget": -1}, "^budget: "),
        ({"budget": 2.5}, "^budget: "),
        ({"eligible": np.ones(7)}, "^eligible: "),
        ({"eligible": np.ones(6, dtype=bool)}, "^eligible: "),
        ({"seed": "abc"}, "^seed: "),
        ({"positive_index": 2}, "^positive_index: "),
        ({"positive_index": None}, "^positive_index: "),
        ({"threshold": 1.2}, "^threshold: "),
        ({"samples": np.full((6, 1, 2), 0.5)}, "^samples: "),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(kwargs: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        run(SEVEN, [NEAR], **kwargs)


def test_bad_probabilities_are_refused_naming_p() -> None:
    with pytest.raises(ValueError, match=r"^P: "):
        run(np.array([[0.7, 0.7]]), [NEAR])


def test_no_eligible_items_gives_an_empty_result_for_every_rule() -> None:
    rules = [NEAR, {"rule": "random", "fraction": 1.0}]
    result = run(SEVEN, rules, eligible=np.zeros(7, dtype=bool))
    assert result.indices.size == 0
    assert result.rule_counts.tolist() == [0, 0]
