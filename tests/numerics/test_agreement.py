"""Agreement coefficients: published reference vectors and hand-computed cases."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from labelling.numerics.aggregation import label_counts
from labelling.numerics.agreement import (
    agreement_summary,
    cohen_kappa,
    fleiss_kappa,
    item_agreement,
    kappa_from_tables,
    krippendorff_alpha,
    krippendorff_alpha_counts,
    label_pairs,
    pairwise_cohen_kappa,
    randolph_kappa,
    reliability_matrix,
)

from .crowd_sim import SHARED

VECTORS = SHARED / "reference" / "agreement_vectors.json"
VECTORS_MISSING = (
    "../shared/ not present: published reference vectors are not available on this machine"
)
TOLERANCE = 1e-4


def _vectors() -> dict[str, Any]:
    if not VECTORS.is_file():
        return {}
    return json.loads(VECTORS.read_text())


def _cases(section: str) -> list[Any]:
    """(entry, level or coefficient, expected) for every expected value of a section."""
    entries = _vectors().get(section)
    if not entries:
        # One placeholder case, so the test runs and skips with the reason.
        return [pytest.param(None, None, None, id="vectors-missing")]
    return [
        pytest.param(entry, key, value, id=f"{entry['name'][:50]}-{key}")
        for entry in entries
        for key, value in entry["expected"].items()
    ]


def _ratings_to_counts(ratings: list[list[int]]) -> np.ndarray:
    """Subjects x raters matrix of categories 1..k -> subjects x categories counts."""
    matrix = np.asarray(ratings)
    subjects, raters = matrix.shape
    items = np.repeat(np.arange(subjects), raters)
    return label_counts(items, matrix.ravel() - 1, subjects, int(matrix.max()))


def _reliability_data(entry: dict[str, Any]) -> np.ndarray:
    """An entry's data as a coders x units float matrix with NaN for missing."""
    if "reliability_data" in entry:
        rows = entry["reliability_data"]
        return np.array([[np.nan if v is None else v for v in row] for row in rows], float)
    assert "transpose" in entry["layout"]
    return np.asarray(entry["ratings"], float).T


def _counts(entry: dict[str, Any]) -> np.ndarray:
    """A Fleiss entry's data as subjects x categories counts."""
    if "counts" in entry:
        return np.asarray(entry["counts"])
    return _ratings_to_counts(entry["ratings"])


# Published reference vectors (../shared/reference/agreement_vectors.json)


@pytest.mark.parametrize(("entry", "level", "expected"), _cases("krippendorff_alpha"))
def test_krippendorff_alpha_matches_the_published_examples(
    entry: dict[str, Any] | None, level: str, expected: float
) -> None:
    if entry is None:
        pytest.skip(VECTORS_MISSING)
    alpha = krippendorff_alpha(_reliability_data(entry), level)  # type: ignore[arg-type]
    assert alpha == pytest.approx(expected, abs=TOLERANCE)


@pytest.mark.parametrize(("entry", "coefficient", "expected"), _cases("fleiss_kappa"))
def test_fleiss_and_randolph_kappa_match_the_published_examples(
    entry: dict[str, Any] | None, coefficient: str, expected: float
) -> None:
    if entry is None:
        pytest.skip(VECTORS_MISSING)
    compute = {"fleiss": fleiss_kappa, "randolph": randolph_kappa}[coefficient]
    assert compute(_counts(entry)) == pytest.approx(expected, abs=TOLERANCE)


def test_every_published_vector_section_is_covered() -> None:
    sections = {key for key, value in _vectors().items() if isinstance(value, list)}
    if not VECTORS.is_file():
        pytest.skip(VECTORS_MISSING)
    # A new section in the file (e.g. cohen_kappa) should get a test here.
    assert sections <= {"krippendorff_alpha", "fleiss_kappa"}


# Krippendorff's alpha by hand


def test_krippendorff_alpha_is_one_for_perfect_agreement() -> None:
    data = [[1, 2, 3, np.nan], [1, 2, 3, 3]]
    for level in ("nominal", "ordinal", "interval", "ratio"):
        assert krippendorff_alpha(data, level) == pytest.approx(1.0)  # type: ignore[arg-type]


def test_krippendorff_alpha_of_two_coders_by_hand() -> None:
    # Units (a,a), (a,b), (b,b): coincidences o_aa=2, o_ab=o_ba=1, o_bb=2; n=6, n_a=n_b=3.
    # alpha = 1 - (n - 1) * D_o / D_e = 1 - 5 * 2 / (2 * 3 * 3) = 4 / 9.
    assert krippendorff_alpha([[0, 0, 1], [0, 1, 1]]) == pytest.approx(4 / 9)


def test_krippendorff_alpha_interval_weights_distances_squared() -> None:
    # Values 0, 1, 2 with units (0,1) and (1,2) and (0,0): o_01=o_10=1, o_12=o_21=1, o_00=2.
    # n_0=3, n_1=2, n_2=1, n=6. D_o sum: 2*1 + 2*1 = 4. D_e sum: 2*(3*2*1 + 3*1*4 + 2*1*1) = 40.
    alpha = krippendorff_alpha([[0, 1, 0], [1, 2, 0]], "interval")
    assert alpha == pytest.approx(1 - 5 * 4 / 40)


def test_krippendorff_alpha_ignores_units_with_a_single_value() -> None:
    with_lone = np.array([[0, 0, 1, 1], [0, 1, 1, np.nan]])
    without = [[0, 0, 1], [0, 1, 1]]
    assert krippendorff_alpha(with_lone) == pytest.approx(krippendorff_alpha(without))


def test_krippendorff_alpha_is_undefined_without_variation_or_pairs() -> None:
    assert krippendorff_alpha([[1, 1], [1, 1]]) is None
    assert krippendorff_alpha([[1, 2, 3]]) is None
    assert krippendorff_alpha(np.full((2, 3), np.nan)) is None


def test_krippendorff_alpha_from_counts_equals_alpha_from_the_matrix() -> None:
    items = [0, 0, 0, 1, 1, 2, 2, 2]
    workers = [0, 1, 2, 0, 2, 0, 1, 2]
    labels = [0, 0, 1, 2, 2, 1, 1, 0]
    matrix = reliability_matrix(items, workers, labels, 3, 3, 3)
    counts = label_counts(items, labels, 3, 3)
    for level in ("nominal", "ordinal", "interval"):
        expected = krippendorff_alpha(matrix, level)
        assert krippendorff_alpha_counts(counts, level) == pytest.approx(expected)


def test_reliability_matrix_places_labels_and_leaves_gaps_as_nan() -> None:
    matrix = reliability_matrix([0, 1, 1], [1, 0, 1], [2, 0, 1], 2, 2, 3)
    np.testing.assert_array_equal(matrix, [[np.nan, 0], [2, 1]])


def test_reliability_matrix_rejects_a_worker_labelling_an_item_twice() -> None:
    with pytest.raises(ValueError, match="more than once"):
        reliability_matrix([0, 0], [1, 1], [0, 1], 1, 2, 2)


@pytest.mark.parametrize(
    ("data", "level", "message"),
    [
        ([1, 2, 3], "nominal", "reliability_data"),
        ([[1, 2], [1, 2]], "cardinal", "level"),
        ([[1, np.inf], [1, 2]], "nominal", "infinite"),
    ],
)
def test_krippendorff_alpha_rejects_bad_input(data: Any, level: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        krippendorff_alpha(data, level)


def test_krippendorff_alpha_counts_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="values"):
        krippendorff_alpha_counts([[1, 1]], "interval", values=[2, 1])
    with pytest.raises(ValueError, match="values"):
        krippendorff_alpha_counts([[1, 1]], "ratio", values=[-1, 1])
    with pytest.raises(ValueError, match="values"):
        krippendorff_alpha_counts([[1, 1]], "nominal", values=[1, 2, 3])


# Fleiss, Randolph and per-item agreement by hand


def test_fleiss_kappa_by_hand() -> None:
    # Two items, two raters: (0,0) and (0,1). P_i = 1 and 0, P = 0.5; p = (3/4, 1/4).
    # P_e = 9/16 + 1/16 = 10/16; kappa = (0.5 - 0.625) / 0.375 = -1/3.
    assert fleiss_kappa([[2, 0], [1, 1]]) == pytest.approx(-1 / 3)
    assert randolph_kappa([[2, 0], [1, 1]]) == pytest.approx(0.0)


def test_fleiss_kappa_is_none_when_items_have_unequal_numbers_of_labels() -> None:
    assert fleiss_kappa([[2, 0], [1, 2]]) is None
    assert randolph_kappa([[2, 0], [1, 2]]) is None


def test_fleiss_kappa_leaves_out_items_without_labels() -> None:
    assert fleiss_kappa([[2, 0], [0, 0], [1, 1]]) == pytest.approx(-1 / 3)


def test_fleiss_kappa_is_none_when_undefined() -> None:
    assert fleiss_kappa([[3, 0], [3, 0]]) is None  # everyone always says 0: chance is 1
    assert fleiss_kappa([[1, 0], [0, 1]]) is None  # one label per item: no pairs
    assert fleiss_kappa(np.zeros((0, 2), np.int64)) is None


def test_item_agreement_is_the_share_of_agreeing_label_pairs() -> None:
    shares = item_agreement([[3, 1], [2, 0], [1, 1], [1, 0], [0, 0]])
    np.testing.assert_allclose(shares, [0.5, 1.0, 0.0, np.nan, np.nan])


@pytest.mark.parametrize("counts", [[1, 2, 3], [[1], [2]], [[1.5, 1], [1, 1]], [[-1, 2], [1, 1]]])
def test_count_based_coefficients_reject_malformed_counts(counts: Any) -> None:
    with pytest.raises(ValueError, match="counts"):
        fleiss_kappa(counts)


def test_agreement_summary_reports_alpha_and_fleiss_kappa() -> None:
    summary = agreement_summary([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1], 3, 2)
    assert summary["krippendorff_alpha"] == pytest.approx(
        krippendorff_alpha([[0, 0, 1], [0, 1, 1]])
    )
    assert summary["fleiss_kappa"] == pytest.approx(fleiss_kappa([[2, 0], [1, 1], [0, 2]]))


# Cohen's kappa by hand


def test_cohen_kappa_of_a_textbook_table() -> None:
    # 50 items: both yes 20, a yes b no 5, a no b yes 10, both no 15. p_o=0.7, p_e=0.5.
    a = [1] * 25 + [0] * 25
    b = [1] * 20 + [0] * 5 + [1] * 10 + [0] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_is_none_when_both_raters_give_one_class() -> None:
    assert cohen_kappa([1, 1, 1], [1, 1, 1]) is None
    assert cohen_kappa([], []) is None


def test_cohen_kappa_rejects_raters_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="same length"):
        cohen_kappa([0, 1], [0])
    with pytest.raises(ValueError, match="b holds codes"):
        cohen_kappa([0, 1], [0, 3], n_classes=2)


def test_kappa_from_tables_marks_undefined_tables_nan() -> None:
    kappa, observed, chance = kappa_from_tables([[[2, 0], [0, 0]], [[0, 0], [0, 0]]])
    assert np.isnan(kappa).all()
    assert observed[0] == 1.0 and chance[0] == 1.0


def test_label_pairs_lists_each_pair_of_workers_on_an_item_once() -> None:
    items = np.array([0, 0, 0, 1, 1])
    workers = np.array([2, 0, 1, 1, 0])
    labels = np.array([5, 3, 4, 7, 6])
    pairs = set(zip(*(part.tolist() for part in label_pairs(items, workers, labels)), strict=True))
    assert pairs == {(0, 1, 3, 4), (0, 2, 3, 5), (1, 2, 4, 5), (0, 1, 6, 7)}


def test_pairwise_cohen_kappa_averages_pairs_with_enough_shared_items() -> None:
    a = np.array([1] * 25 + [0] * 25)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    # Workers 0 and 1 share 50 items (kappa 0.4); worker 2 shares items 0-2 with both.
    items = np.concatenate([np.arange(50), np.arange(50), [0, 1, 2]])
    workers = np.concatenate([np.zeros(50), np.ones(50), [2, 2, 2]]).astype(np.int64)
    labels = np.concatenate([a, b, [0, 0, 0]])
    assert pairwise_cohen_kappa(items, workers, labels, 50, 3, 2) == pytest.approx(0.4)
    kappa_02 = cohen_kappa(a[:3], [0, 0, 0])
    kappa_12 = cohen_kappa(b[:3], [0, 0, 0])
    assert kappa_02 is not None and kappa_12 is not None
    mean = (0.4 + kappa_02 + kappa_12) / 3
    assert pairwise_cohen_kappa(items, workers, labels, 50, 3, 2, min_shared=3) == pytest.approx(
        mean
    )
    assert pairwise_cohen_kappa(items, workers, labels, 50, 3, 2, min_shared=51) is None
