"""Uncertainty measures against hand-computed values."""

import math
from typing import Any

import numpy as np
import pytest

from labelling.numerics.uncertainty import (
    entropy,
    least_confidence,
    margin,
    margin_uncertainty,
    mutual_information,
    pack_samples,
    positive_variance,
    sample_counts,
    threshold_distance,
    top_confidence,
)

# Three binary rows: a coin flip, a fairly sure row and a certain row (which exercises 0 log 0).
BINARY = np.array([[0.5, 0.5], [0.9, 0.1], [1.0, 0.0]])
# One three-class row, deliberately not sorted so the top-two search has to find 0.5 and 0.3.
THREE = np.array([[0.3, 0.5, 0.2]])
NAN = float("nan")


def test_top_confidence_is_the_largest_probability() -> None:
    assert top_confidence(BINARY) == pytest.approx([0.5, 0.9, 1.0])
    assert top_confidence(THREE) == pytest.approx([0.5])


def test_least_confidence_is_one_minus_the_largest_probability() -> None:
    # 1 - 0.5 = 0.5; 1 - 0.9 = 0.1; 1 - 1 = 0; three classes: 1 - 0.5 = 0.5
    assert least_confidence(BINARY) == pytest.approx([0.5, 0.1, 0.0])
    assert least_confidence(THREE) == pytest.approx([0.5])


def test_margin_is_the_gap_between_the_top_two_probabilities() -> None:
    # 0.5 - 0.5 = 0; 0.9 - 0.1 = 0.8; 1 - 0 = 1; three classes: 0.5 - 0.3 = 0.2
    assert margin(BINARY) == pytest.approx([0.0, 0.8, 1.0])
    assert margin(THREE) == pytest.approx([0.2])


def test_margin_uncertainty_is_one_minus_the_margin_so_higher_is_more_uncertain() -> None:
    # 1 - 0 = 1; 1 - 0.8 = 0.2; 1 - 1 = 0; three classes: 1 - 0.2 = 0.8
    assert margin_uncertainty(BINARY) == pytest.approx([1.0, 0.2, 0.0])
    assert margin_uncertainty(THREE) == pytest.approx([0.8])


def test_entropy_is_in_nats_and_treats_zero_log_zero_as_zero() -> None:
    # ln 2 = 0.693147;  -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.094825 + 0.230259 = 0.325083;  certain: 0
    assert entropy(BINARY) == pytest.approx([0.693147, 0.325083, 0.0], abs=1e-6)


def test_entropy_of_a_three_class_row_and_its_normalised_form() -> None:
    # -(0.5 ln 0.5 + 0.3 ln 0.3 + 0.2 ln 0.2) = 0.346574 + 0.361192 + 0.321888 = 1.029653
    # normalised by ln 3 = 1.098612: 1.029653 / 1.098612 = 0.937231
    assert entropy(THREE) == pytest.approx([1.029653], abs=1e-6)
    assert entropy(THREE, normalise=True) == pytest.approx([0.937231], abs=1e-6)


def test_entropy_of_a_uniform_row_is_log_k() -> None:
    assert entropy(np.full((1, 4), 0.25)) == pytest.approx([math.log(4)])
    assert entropy(np.full((1, 4), 0.25), normalise=True) == pytest.approx([1.0])


def test_a_certain_row_has_zero_entropy_not_negative_zero() -> None:
    assert math.copysign(1.0, entropy(np.array([[0.0, 1.0, 0.0]]))[0]) == 1.0


def test_threshold_distance_of_a_binary_row_is_the_gap_to_the_threshold() -> None:
    # positive class is column 1: |0.5 - 0.3| = 0.2; |0.1 - 0.3| = 0.2; |0.0 - 0.3| = 0.3
    assert threshold_distance(BINARY, 1, 0.3) == pytest.approx([0.2, 0.2, 0.3])
    # positive class is column 0: |0.5 - 0.3| = 0.2; |0.9 - 0.3| = 0.6; |1.0 - 0.3| = 0.7
    assert threshold_distance(BINARY, 0, 0.3) == pytest.approx([0.2, 0.6, 0.7])


def test_threshold_distance_of_a_multi_class_row_is_the_top_two_margin() -> None:
    # The contract's multi-class rule ignores the threshold: 0.5 - 0.3 = 0.2
    assert threshold_distance(THREE, 0, 0.9) == pytest.approx([0.2])
    assert threshold_distance(THREE, None, 0.5) == pytest.approx([0.2])


def test_threshold_distance_of_a_binary_problem_needs_the_positive_index() -> None:
    with pytest.raises(ValueError, match=r"positive_index"):
        threshold_distance(BINARY, None, 0.5)
    with pytest.raises(ValueError, match=r"positive_index"):
        threshold_distance(BINARY, 2, 0.5)
    with pytest.raises(ValueError, match=r"threshold"):
        threshold_distance(BINARY, 1, 1.5)


def test_mutual_information_of_two_disagreeing_sure_samples_is_log_two() -> None:
    # mean [0.5, 0.5] has entropy ln 2; each sample has entropy 0; BALD = ln 2 - 0
    samples = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    assert mutual_information(samples) == pytest.approx([math.log(2)])


def test_mutual_information_of_identical_samples_is_zero() -> None:
    # every sample equals the mean, so H(mean) - mean(H) = ln 2 - ln 2 = 0
    samples = np.array([[[0.5, 0.5], [0.5, 0.5]]])
    assert mutual_information(samples) == pytest.approx([0.0])


def test_mutual_information_of_two_soft_samples() -> None:
    # samples [0.8, 0.2] and [0.4, 0.6]; mean [0.6, 0.4]
    # H(mean) = -(0.6 ln 0.6 + 0.4 ln 0.4) = 0.306495 + 0.366516 = 0.673012
    # H(0.8, 0.2) = 0.178515 + 0.321888 = 0.500402;  H(0.4, 0.6) = 0.673012
    # BALD = 0.673012 - (0.500402 + 0.673012) / 2 = 0.673012 - 0.586707 = 0.086305
    samples = np.array([[[0.8, 0.2], [0.4, 0.6]]])
    assert mutual_information(samples) == pytest.approx([0.086305], abs=1e-6)


def test_positive_variance_is_the_population_variance_of_the_positive_class() -> None:
    # p(positive) = 0.2 and 0.6; mean 0.4; ((0.2)^2 + (0.2)^2) / 2 = 0.04
    samples = np.array([[[0.8, 0.2], [0.4, 0.6]]])
    assert positive_variance(samples, 1) == pytest.approx([0.04])
    assert positive_variance(samples, 0) == pytest.approx([0.04])


def test_rows_without_samples_score_nan_and_short_rows_use_only_their_samples() -> None:
    samples = np.array(
        [
            [[1.0, 0.0], [0.0, 1.0], [NAN, NAN]],  # two samples, padded: BALD ln 2
            [[0.8, 0.2], [NAN, NAN], [NAN, NAN]],  # one sample: BALD 0, variance 0
            [[NAN, NAN], [NAN, NAN], [NAN, NAN]],  # no samples: NaN
        ]
    )
    assert sample_counts(samples).tolist() == [2, 1, 0]
    bald = mutual_information(samples)
    assert bald[:2] == pytest.approx([math.log(2), 0.0])
    assert np.isnan(bald[2])
    variance = positive_variance(samples, 1)
    # row 0: values 0 and 1, mean 0.5, variance (0.25 + 0.25) / 2 = 0.25
    assert variance[:2] == pytest.approx([0.25, 0.0])
    assert np.isnan(variance[2])


def test_pack_samples_pads_a_flat_table_into_rows_keeping_sample_order() -> None:
    flat = np.array([[0.8, 0.2], [0.1, 0.9], [0.4, 0.6]])
    packed = pack_samples(flat, np.array([2, 0, 2]), 4)
    assert packed.shape == (4, 2, 2)
    assert sample_counts(packed).tolist() == [1, 0, 2, 0]
    assert packed[2].tolist() == [[0.8, 0.2], [0.4, 0.6]]
    assert packed[0, 0].tolist() == [0.1, 0.9]
    assert np.isnan(packed[1]).all() and np.isnan(packed[0, 1]).all()


def test_pack_samples_refuses_row_indices_out_of_range() -> None:
    with pytest.raises(ValueError, match=r"rows"):
        pack_samples(np.array([[0.5, 0.5]]), np.array([3]), 3)
    with pytest.raises(ValueError, match=r"n_rows"):
        pack_samples(np.array([[0.5, 0.5]]), np.array([0]), -1)


@pytest.mark.parametrize(
    "bad",
    [
        np.array([0.5, 0.5]),  # not a matrix
        np.array([[1.0], [1.0]]),  # a single class
        np.array([[0.6, 0.6]]),  # sums to 1.2
        np.array([[1.5, -0.5]]),  # sums to 1 but negative
        np.array([[NAN, 1.0]]),  # not finite
        [["a", "b"]],  # not numeric
    ],
)
def test_a_malformed_probability_matrix_is_refused_naming_p(bad: Any) -> None:
    with pytest.raises(ValueError, match=r"^P: "):
        entropy(bad)


def test_a_sample_slot_that_is_partly_nan_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^S: "):
        mutual_information(np.array([[[0.5, NAN]]]))
    with pytest.raises(ValueError, match=r"^S: "):
        mutual_information(np.array([[[0.5, 0.6]]]))
    with pytest.raises(ValueError, match=r"^positive_index: "):
        positive_variance(np.array([[[0.5, 0.5]]]), 2)


def test_an_empty_matrix_gives_empty_scores() -> None:
    assert entropy(np.empty((0, 3))).shape == (0,)
    assert margin(np.empty((0, 2))).shape == (0,)


@pytest.mark.parametrize("k", [3, 10, 40])  # 40 classes take the np.partition path
def test_measures_match_a_plain_sort_over_several_row_blocks(k: int) -> None:
    # The kernels work in blocks of about 2**17 values; span three blocks and a ragged tail.
    # Exact zeros exercise 0 log 0.
    rng = np.random.default_rng(k)
    P = rng.gamma(0.3, size=(3 * (2**17 // k) + 17, k)) + 1e-9
    P[::5, 0] = 0.0
    P /= P.sum(axis=1, keepdims=True)
    ordered = np.sort(P, axis=1)
    assert np.array_equal(top_confidence(P), ordered[:, -1])
    assert np.array_equal(margin(P), ordered[:, -1] - ordered[:, -2])
    logs = np.log(np.where(P > 0, P, 1.0))
    np.testing.assert_allclose(entropy(P), -(P * logs).sum(axis=1), rtol=0, atol=1e-12)


def test_mutual_information_matches_its_definition_over_several_row_blocks() -> None:
    rng = np.random.default_rng(1)
    samples = rng.dirichlet(np.ones(3), size=(30_000, 4))
    samples[::3, 2:] = np.nan  # every third row keeps only two samples
    samples[::7] = np.nan  # every seventh row has none
    present = ~np.isnan(samples[:, :, 0])
    filled = np.nan_to_num(samples)
    counts = present.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = filled.sum(axis=1) / counts[:, None]
        each = entropy(filled.reshape(-1, 3)[present.ravel()])
        expected = np.zeros(present.shape)
        expected[present] = each
        reference = entropy(np.nan_to_num(mean, nan=1 / 3)) - expected.sum(axis=1) / counts
    reference[counts == 0] = np.nan
    np.testing.assert_allclose(mutual_information(samples), np.maximum(reference, 0), atol=1e-12)
