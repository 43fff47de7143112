"""Majority vote and Dawid-Skene: hand-computed cases, a simulated crowd, published crowd data."""

from __future__ import annotations

import functools
import time

import numpy as np
import pytest

from labelling.numerics.aggregation import (
    dawid_skene,
    gold_arrays,
    label_counts,
    majority_vote,
)

from .crowd_sim import SHARED, Crowd, load_crowd_data, simulate_crowd

CROWD_MISSING = "../shared/ not present: published crowd data are not available on this machine"


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of items with a known truth that ``predicted`` gets right."""
    known = truth >= 0
    return float(np.mean(predicted[known] == truth[known]))


@pytest.fixture(scope="module")
def crowd() -> Crowd:
    return simulate_crowd(seed=7)


@functools.cache
def _load(name: str) -> Crowd:
    return load_crowd_data(name)


def published(name: str) -> Crowd:
    if not (SHARED / "crowd_data" / name).is_dir():
        pytest.skip(CROWD_MISSING)
    return _load(name)


# Majority vote


def test_label_counts_tallies_each_class_per_item() -> None:
    counts = label_counts([0, 0, 1, 2, 0], [1, 1, 0, 2, 2], 4, 3)
    assert counts.tolist() == [[0, 2, 1], [1, 0, 0], [0, 0, 1], [0, 0, 0]]


def test_majority_vote_picks_the_most_voted_class_with_its_shares() -> None:
    winners, shares = majority_vote([0, 0, 0, 1, 1], [2, 2, 1, 0, 0], 2, 3)
    assert winners.tolist() == [2, 0]
    np.testing.assert_allclose(shares, [[0.0, 1 / 3, 2 / 3], [1.0, 0.0, 0.0]])


def test_majority_vote_breaks_ties_towards_the_class_most_frequent_in_the_data() -> None:
    # Class 2 is the most frequent class overall (3 labels), so it wins item 0's 1-1 tie.
    items = [0, 0, 1, 2, 3]
    labels = [1, 2, 2, 2, 1]
    winners, _ = majority_vote(items, labels, 4, 3)
    assert winners[0] == 2


def test_majority_vote_breaks_ties_between_equally_frequent_classes_by_lowest_code() -> None:
    # Classes 1 and 2 are equally frequent overall; the lowest code wins the tie on item 0.
    winners, _ = majority_vote([0, 0, 1, 1], [2, 1, 2, 1], 2, 3)
    assert winners.tolist() == [1, 1]


def test_majority_vote_gives_unlabelled_items_minus_one_and_zero_shares() -> None:
    winners, shares = majority_vote([1], [0], 3, 2)
    assert winners.tolist() == [-1, 0, -1]
    assert shares[0].tolist() == [0, 0] and shares[2].tolist() == [0, 0]


def test_majority_vote_does_not_depend_on_the_order_of_the_labels(crowd: Crowd) -> None:
    order = np.random.default_rng(1).permutation(crowd.items.size)
    first, _ = majority_vote(crowd.items, crowd.labels, crowd.n_items, crowd.n_classes)
    second, _ = majority_vote(
        crowd.items[order], crowd.labels[order], crowd.n_items, crowd.n_classes
    )
    np.testing.assert_array_equal(first, second)


# Dawid-Skene on hand-computed and simulated cases


def test_dawid_skene_one_iteration_matches_a_hand_computed_em_step() -> None:
    # Item 0: both workers say 0. Item 1: worker 0 says 1, worker 1 says 0 (shares 1/2, 1/2).
    result = dawid_skene([0, 0, 1, 1], [0, 1, 0, 1], [0, 0, 1, 0], 2, 2, 2, max_iter=1, smoothing=1)
    # M-step with one pseudo-count per cell: priors (1.5 + 1, 0.5 + 1) / 4.
    priors = np.array([2.5, 1.5]) / 4
    worker0 = np.array([[2, 1.5], [1, 1.5]]) / np.array([[3.5], [2.5]])
    worker1 = np.array([[2.5, 1], [1.5, 1]]) / np.array([[3.5], [2.5]])
    np.testing.assert_allclose(result.priors, priors)
    np.testing.assert_allclose(result.confusion, [worker0, worker1])
    joint0 = priors * worker0[:, 0] * worker1[:, 0]
    joint1 = priors * worker0[:, 1] * worker1[:, 0]
    np.testing.assert_allclose(result.posterior, [joint0 / joint0.sum(), joint1 / joint1.sum()])
    assert result.log_likelihood == pytest.approx(np.log(joint0.sum()) + np.log(joint1.sum()))
    assert result.n_iter == 1 and not result.converged


def test_dawid_skene_posterior_and_confusion_rows_are_distributions(crowd: Crowd) -> None:
    result = dawid_skene(*crowd.arrays, *crowd.sizes)
    np.testing.assert_allclose(result.posterior.sum(axis=1), 1.0)
    np.testing.assert_allclose(result.confusion.sum(axis=2), 1.0)
    assert result.priors.sum() == pytest.approx(1.0)
    assert result.converged and result.n_iter < 100


def test_dawid_skene_recovers_the_truth_better_than_majority_vote(crowd: Crowd) -> None:
    result = dawid_skene(*crowd.arrays, *crowd.sizes)
    voted, _ = majority_vote(crowd.items, crowd.labels, crowd.n_items, crowd.n_classes)
    assert accuracy(result.labels, crowd.truth) >= 0.96
    assert accuracy(result.labels, crowd.truth) > accuracy(voted, crowd.truth) + 0.03


def test_dawid_skene_learns_a_biased_workers_asymmetric_confusion(crowd: Crowd) -> None:
    result = dawid_skene(*crowd.arrays, *crowd.sizes)
    biased = sorted(crowd.workers_of("biased"))
    # Planted: class 1 answered as 0 half the time, other classes answered correctly >= 90 %.
    np.testing.assert_allclose(result.confusion[biased, 1, 0], 0.5, atol=0.12)
    assert np.all(result.confusion[biased, 0, 0] > 0.8)


def test_dawid_skene_keeps_gold_items_clamped_to_their_answers() -> None:
    # Three workers agree on class 1 for item 0, but gold says 0.
    gold = {0: 0}
    result = dawid_skene([0, 0, 0, 1], [0, 1, 2, 0], [1, 1, 1, 1], 2, 3, 2, gold=gold)
    assert result.posterior[0].tolist() == [1.0, 0.0]
    assert result.labels[0] == 0


def test_gold_answers_teach_dawid_skene_a_workers_confusion() -> None:
    # Worker 0 answers 1 on ten gold items of class 0; without gold nothing says that is wrong.
    items, workers, labels = np.arange(10), np.zeros(10, np.int64), np.ones(10, np.int64)
    gold = (np.arange(10), np.zeros(10, np.int64))
    with_gold = dawid_skene(items, workers, labels, 10, 1, 2, gold=gold)
    without = dawid_skene(items, workers, labels, 10, 1, 2)
    assert with_gold.confusion[0, 0, 1] > 0.95
    assert with_gold.labels.tolist() == [0] * 10
    assert without.labels.tolist() == [1] * 10


def test_gold_items_keep_their_answers_inside_a_simulated_crowd(crowd: Crowd) -> None:
    without = dawid_skene(*crowd.arrays, *crowd.sizes)
    wrong = np.flatnonzero(without.labels != crowd.truth)
    gold_items = np.concatenate([wrong, np.arange(0, crowd.n_items, 10)])
    gold_items = np.unique(gold_items)
    result = dawid_skene(*crowd.arrays, *crowd.sizes, gold=(gold_items, crowd.truth[gold_items]))
    np.testing.assert_array_equal(result.labels[gold_items], crowd.truth[gold_items])
    assert np.all(result.posterior[gold_items].max(axis=1) == 1.0)
    rest = np.setdiff1d(np.arange(crowd.n_items), gold_items)
    assert accuracy(result.labels[rest], crowd.truth[rest]) >= 0.99 * accuracy(
        without.labels[rest], crowd.truth[rest]
    )


def test_dawid_skene_leaves_items_without_labels_at_the_priors(crowd: Crowd) -> None:
    result = dawid_skene(
        crowd.items, crowd.workers, crowd.labels, crowd.n_items + 1, crowd.n_workers, 3
    )
    assert result.labels[-1] == -1
    np.testing.assert_allclose(result.posterior[-1], result.priors)


def test_dawid_skene_does_not_depend_on_the_order_of_the_labels(crowd: Crowd) -> None:
    order = np.random.default_rng(2).permutation(crowd.items.size)
    first = dawid_skene(*crowd.arrays, *crowd.sizes)
    second = dawid_skene(
        crowd.items[order], crowd.workers[order], crowd.labels[order], *crowd.sizes
    )
    np.testing.assert_allclose(first.posterior, second.posterior, atol=1e-9)


def test_dawid_skene_fits_a_million_labels_in_seconds() -> None:
    big = simulate_crowd(
        n_items=200_000,
        per_item=5,
        counts={"good": 1400, "biased": 400, "random": 120, "constant": 40, "too_fast": 40},
        seed=1,
    )
    start = time.perf_counter()
    result = dawid_skene(*big.arrays, *big.sizes)
    elapsed = time.perf_counter() - start
    # The target is 2 s (see benchmarks/); 5 s leaves room for a busy machine but still fails
    # for anything that loops over labels in Python.
    assert elapsed < 5.0
    assert accuracy(result.labels, big.truth) > 0.95


# Input validation


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (([0, 1], [0], [0, 1], 2, 2, 2), "workers"),
        (([0, 1], [0, 1], [0], 2, 2, 2), "labels"),
        (([0, 2], [0, 1], [0, 1], 2, 2, 2), "items"),
        (([0, 1], [0, 5], [0, 1], 2, 2, 2), "workers"),
        (([0, 1], [0, 1], [0, -1], 2, 2, 2), "labels"),
        (([0, 1], [0, 1], [0, 1], 2, 2, 1), "n_classes"),
        (([0, 1], [0, 1], [0, 1], -1, 2, 2), "n_items"),
        (([0.0, 1.0], [0, 1], [0, 1], 2, 2, 2), "items"),
        (([[0, 1]], [0, 1], [0, 1], 2, 2, 2), "items"),
    ],
)
def test_dawid_skene_rejects_malformed_labels_naming_the_argument(
    arguments: tuple, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        dawid_skene(*arguments)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_iter": 0}, "max_iter"),
        ({"tol": -1.0}, "tol"),
        ({"smoothing": 0.0}, "smoothing"),
        ({"gold": {5: 0}}, "gold items"),
        ({"gold": {0: 2}}, "gold classes"),
        ({"gold": ([0, 0], [1, 1])}, "gold"),
    ],
)
def test_dawid_skene_rejects_bad_options_naming_them(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dawid_skene([0, 1], [0, 1], [0, 1], 2, 2, 2, **options)


def test_majority_vote_rejects_labels_and_items_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="labels must have the same length as items"):
        majority_vote([0, 1], [0], 2, 2)


def test_gold_arrays_accepts_a_mapping_or_a_pair_of_arrays() -> None:
    from_mapping = gold_arrays({3: 1, 0: 0}, 4, 2)
    from_pair = gold_arrays(([3, 0], [1, 0]), 4, 2)
    for got in (from_mapping, from_pair):
        assert got[0].tolist() == [3, 0] and got[1].tolist() == [1, 0]


# Published crowd data (../shared/crowd_data)

DAWID_SKENE_REQUIRED = {"bluebirds": 0.88, "d_product": 0.935, "web": 0.81}
# Majority vote under our tie rule, as correct / items with a known truth.
MAJORITY_VOTE_EXPECTED = {"bluebirds": 82 / 108, "d_product": 7455 / 8315, "web": 1802 / 2653}


@pytest.mark.parametrize("name", sorted(DAWID_SKENE_REQUIRED))
def test_dawid_skene_beats_majority_vote_on_published_crowd_data(name: str) -> None:
    data = published(name)
    result = dawid_skene(*data.arrays, *data.sizes)
    voted, _ = majority_vote(data.items, data.labels, data.n_items, data.n_classes)
    assert accuracy(result.labels, data.truth) >= DAWID_SKENE_REQUIRED[name]
    assert accuracy(result.labels, data.truth) > accuracy(voted, data.truth)


@pytest.mark.parametrize("name", sorted(MAJORITY_VOTE_EXPECTED))
def test_majority_vote_accuracy_on_published_crowd_data_is_fixed_by_its_tie_rule(name: str) -> None:
    # bluebirds and d_product have no ties: 0.759 and 0.897 as published. web has 567 tied
    # items; our rule (most frequent class overall, then lowest code) gives 0.679, below the
    # README's 0.688-0.735, whose low end is crowd-kit's order-dependent first-seen rule.
    data = published(name)
    voted, _ = majority_vote(data.items, data.labels, data.n_items, data.n_classes)
    assert accuracy(voted, data.truth) == pytest.approx(MAJORITY_VOTE_EXPECTED[name], abs=1e-9)


def test_dawid_skene_raises_recall_of_both_classes_on_the_skewed_product_data() -> None:
    data = published("d_product")
    result = dawid_skene(*data.arrays, *data.sizes)
    voted, _ = majority_vote(data.items, data.labels, data.n_items, data.n_classes)
    recall = {
        method: [float(np.mean(found[data.truth == k] == k)) for k in range(2)]
        for method, found in (("dawid_skene", result.labels), ("majority_vote", voted))
    }
    print(f"d_product per-class recall (class 0 = no match, 1 = match): {recall}")
    # The minority class (matches, 12 %) is the hard one for both methods.
    assert recall["dawid_skene"][0] > recall["majority_vote"][0]
    assert recall["dawid_skene"][1] > recall["majority_vote"][1]
