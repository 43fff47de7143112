"""Labeller reliability figures and detectors: hand-computed cases and a planted crowd."""

from __future__ import annotations

import numpy as np
import pytest

from labelling.numerics.aggregation import dawid_skene
from labelling.numerics.reliability import (
    ConsensusAgreement,
    GoldAccuracy,
    LabellerReliability,
    ReliabilityThresholds,
    consensus_agreement,
    detect_constant,
    detect_low_gold_accuracy,
    detect_random,
    detect_too_fast,
    expected_accuracy,
    gold_accuracy,
    labeller_reliability,
    leave_one_out_consensus,
    median_durations,
    others_on_item,
    wilson_interval,
    worker_class_counts,
)

from .crowd_sim import Crowd, simulate_crowd

# A planted crowd and its reliability report, computed once


@pytest.fixture(scope="module")
def crowd() -> Crowd:
    return simulate_crowd(seed=7)


@pytest.fixture(scope="module")
def gold(crowd: Crowd) -> tuple[np.ndarray, np.ndarray]:
    items = np.flatnonzero(np.random.default_rng(107).random(crowd.n_items) < 0.2)
    return items, crowd.truth[items]


@pytest.fixture(scope="module")
def report(crowd: Crowd, gold: tuple[np.ndarray, np.ndarray]) -> LabellerReliability:
    model = dawid_skene(*crowd.arrays, *crowd.sizes)
    return labeller_reliability(
        *crowd.arrays, *crowd.sizes, model=model, gold=gold, durations=crowd.durations
    )


def flagged(report: LabellerReliability, name: str) -> set[int]:
    return {int(w) for w in np.flatnonzero(report.flags[name])}


def test_random_flag_finds_exactly_the_random_and_constant_clickers(
    crowd: Crowd, report: LabellerReliability
) -> None:
    # A constant clicker carries no information either, so it is at chance too.
    assert flagged(report, "random") == crowd.workers_of("random", "constant")


def test_constant_flag_finds_exactly_the_constant_clickers(
    crowd: Crowd, report: LabellerReliability
) -> None:
    assert flagged(report, "constant") == crowd.workers_of("constant")


def test_too_fast_flag_finds_exactly_the_too_fast_workers(
    crowd: Crowd, report: LabellerReliability
) -> None:
    assert flagged(report, "too_fast") == crowd.workers_of("too_fast")


def test_low_gold_accuracy_flag_finds_exactly_the_workers_near_chance(
    crowd: Crowd, report: LabellerReliability
) -> None:
    assert flagged(report, "low_gold_accuracy") == crowd.workers_of("random", "constant")


def test_good_and_biased_workers_raise_no_flag(crowd: Crowd, report: LabellerReliability) -> None:
    for worker in crowd.workers_of("good", "biased"):
        assert report.flags_of(worker) == []


def test_expected_accuracy_from_dawid_skene_tracks_the_planted_accuracy(
    crowd: Crowd, report: LabellerReliability
) -> None:
    known = crowd.truth[crowd.items] == crowd.labels
    true_accuracy = np.bincount(crowd.workers, weights=known) / np.bincount(crowd.workers)
    error = np.abs(report.expected_accuracy - true_accuracy)
    assert error.max() < 0.05


def test_binary_sets_also_get_youden_j_against_the_consensus() -> None:
    binary = simulate_crowd(n_classes=2, priors=(0.85, 0.15), seed=3)
    agreement = consensus_agreement(*binary.arrays, *binary.sizes)
    good = sorted(binary.workers_of("good"))
    randoms = sorted(binary.workers_of("random"))
    assert np.all(agreement.youden_j[good] > 0.35)
    assert np.all(np.abs(agreement.youden_j[randoms]) < 0.15)
    # With 85 % of one class, kappa understates good workers more than J does.
    assert agreement.youden_j[good].mean() > agreement.kappa[good].mean() + 0.05
    three_classes = simulate_crowd(seed=3)
    assert np.isnan(consensus_agreement(*three_classes.arrays, *three_classes.sizes).youden_j).all()


def test_detectors_ignore_workers_with_too_few_labels() -> None:
    # Six bad workers with about ten labels each: too few to judge anyone.
    few = simulate_crowd(n_items=20, per_item=3, counts={"random": 3, "constant": 3}, seed=1)
    result = labeller_reliability(*few.arrays, *few.sizes, durations=few.durations)
    assert not any(result.flags[name].any() for name in ("random", "constant", "too_fast"))


# Hand-computed figures


def test_wilson_interval_by_hand() -> None:
    lower, upper = wilson_interval([8, 0], [10, 0])
    assert lower[0] == pytest.approx(0.4902, abs=1e-4)
    assert upper[0] == pytest.approx(0.9433, abs=1e-4)
    assert np.isnan(lower[1]) and np.isnan(upper[1])


def test_wilson_interval_rejects_more_successes_than_trials() -> None:
    with pytest.raises(ValueError, match="successes"):
        wilson_interval([3], [2])


def test_expected_accuracy_weights_the_diagonal_by_the_class_priors() -> None:
    confusion = [[[0.9, 0.1], [0.4, 0.6]]]
    assert expected_accuracy(confusion, [0.75, 0.25])[0] == pytest.approx(0.75 * 0.9 + 0.25 * 0.6)


def test_gold_accuracy_counts_only_answers_on_gold_items() -> None:
    items, workers, labels = [0, 1, 2, 0, 1], [0, 0, 0, 1, 1], [1, 0, 1, 0, 0]
    result = gold_accuracy(items, workers, labels, 3, 3, 2, gold={0: 1, 1: 1})
    assert result.n_gold.tolist() == [2, 2, 0]
    assert result.n_correct.tolist() == [1, 0, 0]
    np.testing.assert_allclose(result.accuracy, [0.5, 0.0, np.nan])
    assert np.isnan(result.upper[2])


def test_leave_one_out_consensus_by_hand() -> None:
    # Item 0: labels 0, 0, 1. Item 1: labels 1, 1, 1, 0. Item 2: a lone label.
    items = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    labels = np.array([0, 0, 1, 1, 1, 1, 0, 1])
    others = others_on_item(items, labels, 3, 2)
    assert others[:3].tolist() == [[1, 1], [1, 1], [2, 0]]
    assert leave_one_out_consensus(others).tolist() == [-1, -1, 0, 1, 1, 1, 1, -1]


def test_consensus_agreement_by_hand() -> None:
    # Workers 0-2 answer the truth on items 0-3; worker 3 always answers the other class.
    items = np.repeat(np.arange(4), 4)
    workers = np.tile([0, 1, 2, 3], 4)
    truth = np.array([0, 1, 0, 1])
    labels = np.where(workers == 3, 1 - truth[items], truth[items])
    result = consensus_agreement(items, workers, labels, 4, 5, 2)
    assert result.n_compared.tolist() == [4, 4, 4, 4, 0]
    assert result.kappa[0] == pytest.approx(1.0) and result.kappa[3] == pytest.approx(-1.0)
    assert result.youden_j[0] == pytest.approx(1.0) and result.youden_j[3] == pytest.approx(-1.0)
    assert np.isnan(result.kappa[4])


def test_median_durations_skip_unknown_durations() -> None:
    workers = np.array([0, 0, 0, 1, 1, 1, 1])
    seconds = np.array([3.0, np.nan, 1.0, 4.0, 1.0, 2.0, 3.0])
    median, n_timed = median_durations(workers, seconds, 3)
    np.testing.assert_allclose(median, [2.0, 2.5, np.nan])
    assert n_timed.tolist() == [2, 4, 0]


def test_worker_class_counts_count_own_and_surrounding_labels() -> None:
    own, around = worker_class_counts([0, 0, 1, 1], [0, 1, 0, 1], [1, 1, 0, 1], 2, 2, 2)
    assert own.tolist() == [[1, 1], [0, 2]]
    assert around.tolist() == [[0, 2], [1, 1]]


# Detectors on hand-made figures


def agreement_of(n: list[int], upper: list[float]) -> ConsensusAgreement:
    nan = np.full(len(n), np.nan)
    return ConsensusAgreement(np.array(n), nan, nan, nan, np.array(upper), nan)


def test_random_needs_enough_labels_and_an_upper_bound_near_chance() -> None:
    flags = detect_random(agreement_of([50, 50, 19, 50], [0.1, 0.25, 0.0, np.nan]))
    assert flags.tolist() == [True, False, False, False]


def test_constant_is_not_raised_when_the_workers_items_are_all_one_class() -> None:
    own = np.array([[40, 0], [40, 0], [19, 0], [30, 10]])
    around = np.array([[60.0, 20.0], [78.0, 2.0], [20.0, 20.0], [40.0, 40.0]])
    assert detect_constant(own, around).tolist() == [True, False, False, False]


def test_constant_is_not_raised_for_a_constant_data_set() -> None:
    own = np.array([[40, 0], [30, 0]])
    around = np.array([[30.0, 0.0], [40.0, 0.0]])
    assert not detect_constant(own, around).any()


def test_too_fast_compares_with_the_median_of_workers_medians() -> None:
    median = np.array([1.0, 8.0, 10.0, 9.0, 1.0, np.nan])
    n_timed = np.array([30, 30, 30, 30, 5, 0])
    assert detect_too_fast(median, n_timed).tolist() == [True, False, False, False, False, False]
    assert detect_too_fast(np.full(2, np.nan), np.zeros(2, np.int64)).tolist() == [False, False]


def test_low_gold_accuracy_needs_enough_gold_and_an_upper_bound_below_the_threshold() -> None:
    n_gold = np.array([20, 20, 5])
    n_correct = np.array([6, 16, 0])
    lower, upper = wilson_interval(n_correct, n_gold)
    gold = GoldAccuracy(n_gold, n_correct, n_correct / n_gold, lower, upper)
    assert detect_low_gold_accuracy(gold).tolist() == [True, False, False]


def test_thresholds_are_keyword_arguments_of_the_report(crowd: Crowd) -> None:
    # Nobody is too fast when "too fast" means under 1 % of the project's median.
    strict = ReliabilityThresholds(too_fast_ratio=0.01)
    result = labeller_reliability(
        *crowd.arrays, *crowd.sizes, durations=crowd.durations, thresholds=strict
    )
    assert not result.flags["too_fast"].any()


# Input validation


def test_labeller_reliability_rejects_durations_of_the_wrong_length(crowd: Crowd) -> None:
    with pytest.raises(ValueError, match="durations"):
        labeller_reliability(*crowd.arrays, *crowd.sizes, durations=np.ones(3))


def test_labeller_reliability_rejects_negative_durations() -> None:
    with pytest.raises(ValueError, match="durations"):
        labeller_reliability([0, 1], [0, 1], [0, 1], 2, 2, 2, durations=[1.0, -1.0])


def test_labeller_reliability_rejects_a_model_for_other_workers(crowd: Crowd) -> None:
    model = dawid_skene([0, 1], [0, 1], [0, 1], 2, 2, 2)
    with pytest.raises(ValueError, match="model"):
        labeller_reliability(*crowd.arrays, *crowd.sizes, model=model)


def test_labeller_reliability_rejects_malformed_labels_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="workers"):
        labeller_reliability([0, 1], [0, 9], [0, 1], 2, 2, 2)
    with pytest.raises(ValueError, match="gold items"):
        labeller_reliability([0, 1], [0, 1], [0, 1], 2, 2, 2, gold={7: 0})
