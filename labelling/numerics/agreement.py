"""Agreement between labellers: Krippendorff's alpha, Fleiss', Randolph's and Cohen's kappa.

Coefficients that are undefined on the data given (no pairable values, no variation, unequal
numbers of labels for Fleiss) are returned as None rather than NaN, so callers can report null.
Most functions take an n_items x n_classes count matrix, as ``aggregation.label_counts`` builds it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike

from labelling.numerics.aggregation import (
    FloatArray,
    IntArray,
    as_codes,
    check_count,
    check_labels,
    label_counts,
)

Level = Literal["nominal", "ordinal", "interval", "ratio"]
LEVELS: tuple[Level, ...] = ("nominal", "ordinal", "interval", "ratio")


def reliability_matrix(
    items: ArrayLike,
    workers: ArrayLike,
    labels: ArrayLike,
    n_items: int,
    n_workers: int,
    n_classes: int,
) -> FloatArray:
    """Build the coders x units matrix of class codes, NaN where a worker did not label a unit."""
    item_codes, worker_codes, label_codes = check_labels(
        items, workers, labels, n_items, n_workers, n_classes
    )
    cells = worker_codes * n_items + item_codes
    if np.unique(cells).size != cells.size:
        raise ValueError("workers label some item more than once; a matrix cell can hold one label")
    matrix = np.full(n_workers * n_items, np.nan)
    matrix[cells] = label_codes
    return matrix.reshape(n_workers, n_items)


def check_counts(counts: ArrayLike) -> IntArray:
    """Return an items x classes matrix of non-negative integer counts, or raise ValueError."""
    matrix = np.asarray(counts)
    if matrix.ndim != 2 or matrix.shape[1] < 2:
        raise ValueError(
            f"counts must be an items x classes matrix with >= 2 classes, got {matrix.shape}"
        )
    if matrix.size and not np.issubdtype(matrix.dtype, np.integer):
        raise ValueError(f"counts must hold integers, got dtype {matrix.dtype}")
    if matrix.size and matrix.min() < 0:
        raise ValueError("counts must not be negative")
    return matrix.astype(np.int64, copy=False)


def _check_level(level: str) -> None:
    """Raise ValueError for an unknown level of measurement."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")


def _coincidences(counts: IntArray) -> FloatArray:
    """Krippendorff's coincidence matrix: value pairs within units, each unit weighted 1/(m-1)."""
    pairable = counts[counts.sum(axis=1) >= 2].astype(np.float64)
    weight = 1.0 / (pairable.sum(axis=1) - 1.0)
    within = (pairable.T * weight) @ pairable
    # Remove each value's pairing with itself: a value is not paired with its own occurrence.
    return within - np.diag(weight @ pairable)


def _squared_distances(values: FloatArray, marginals: FloatArray, level: Level) -> FloatArray:
    """The metric's squared difference between every two values (delta squared)."""
    if level == "nominal":
        return 1.0 - np.eye(values.size)
    if level == "interval":
        return np.subtract.outer(values, values) ** 2
    if level == "ratio":
        total = np.add.outer(values, values)
        gap = np.abs(np.subtract.outer(values, values))
        # Two zeros are identical; the ratio metric is 0/0 there and defined as 0.
        return np.divide(gap, total, out=np.zeros_like(gap), where=total != 0) ** 2
    return _ordinal_distances(marginals)


def _ordinal_distances(marginals: FloatArray) -> FloatArray:
    """Ordinal metric: values between the two ranks (inclusive), minus half of each end."""
    below = np.concatenate(([0.0], np.cumsum(marginals)))
    index = np.arange(marginals.size)
    low, high = np.minimum.outer(index, index), np.maximum.outer(index, index)
    between = below[high + 1] - below[low]
    return (between - np.add.outer(marginals, marginals) / 2.0) ** 2


def krippendorff_alpha_counts(
    counts: ArrayLike, level: Level = "nominal", values: ArrayLike | None = None
) -> float | None:
    """Krippendorff's alpha from a units x values count matrix (values default to 0..n-1)."""
    _check_level(level)
    matrix = check_counts(counts)
    numbers = (
        np.arange(matrix.shape[1], dtype=np.float64)
        if values is None
        else np.asarray(values, np.float64)
    )
    if numbers.shape != (matrix.shape[1],):
        raise ValueError("values must give one number per column of counts")
    if level in ("ordinal", "interval", "ratio") and np.any(np.diff(numbers) <= 0):
        raise ValueError("values must be strictly increasing")
    if level == "ratio" and numbers.size and numbers[0] < 0:
        raise ValueError("values must not be negative at the ratio level")
    return _alpha(_coincidences(matrix), numbers, level)


def _alpha(coincidences: FloatArray, values: FloatArray, level: Level) -> float | None:
    """Alpha = 1 - observed / expected disagreement; None when nothing can disagree."""
    marginals = coincidences.sum(axis=1)
    n = marginals.sum()
    distances = _squared_distances(values, marginals, level)
    expected = (np.outer(marginals, marginals) * distances).sum()
    if n < 2 or expected <= 0:
        return None
    observed = (coincidences * distances).sum()
    return float(1.0 - (n - 1.0) * observed / expected)


def krippendorff_alpha(reliability_data: ArrayLike, level: Level = "nominal") -> float | None:
    """Krippendorff's alpha from a coders x units matrix of numbers with NaN for missing."""
    _check_level(level)
    data = np.asarray(reliability_data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(
            f"reliability_data must be a coders x units matrix, got shape {data.shape}"
        )
    if np.isinf(data).any():
        raise ValueError("reliability_data must not hold infinite values")
    present = ~np.isnan(data)
    values, codes = np.unique(data[present], return_inverse=True)
    if values.size < 2:
        # One value (or none) leaves no possible disagreement: alpha is undefined.
        return None
    units = np.nonzero(present)[1]
    counts = np.bincount(units * values.size + codes, minlength=data.shape[1] * values.size)
    return krippendorff_alpha_counts(counts.reshape(data.shape[1], values.size), level, values)


def item_agreement(counts: ArrayLike) -> FloatArray:
    """Per item, the share of pairs of its labels that agree; NaN below two labels.

    This is the pairwise agreement P_i of Fleiss' kappa, not the share of the modal label:
    3 of 4 labels agreeing gives 3 agreeing pairs out of 6, i.e. 0.5.
    """
    matrix = check_counts(counts).astype(np.float64)
    m = matrix.sum(axis=1)
    agreeing = (matrix * (matrix - 1.0)).sum(axis=1)
    pairs = m * (m - 1.0)
    return np.divide(agreeing, pairs, out=np.full_like(m, np.nan), where=pairs > 0)


def _equal_raters(counts: ArrayLike) -> IntArray | None:
    """The labelled rows of counts when all carry the same number (>= 2) of labels, else None."""
    matrix = check_counts(counts)
    totals = matrix.sum(axis=1)
    rows = matrix[totals > 0]
    if rows.shape[0] == 0 or totals[totals > 0].min() != totals.max() or totals.max() < 2:
        return None
    return rows


def _multirater_kappa(rows: IntArray, chance: float) -> float | None:
    """(mean pairwise agreement - chance) / (1 - chance); None when chance is 1."""
    if chance >= 1.0:
        return None
    observed = float(np.mean(item_agreement(rows)))
    return (observed - chance) / (1.0 - chance)


def fleiss_kappa(counts: ArrayLike) -> float | None:
    """Fleiss' kappa from items x classes counts; None unless all labelled items have equal counts.

    Items without labels are left out; chance agreement uses the pooled class shares.
    """
    rows = _equal_raters(counts)
    if rows is None:
        return None
    shares = rows.sum(axis=0) / rows.sum()
    return _multirater_kappa(rows, float(np.sum(shares**2)))


def randolph_kappa(counts: ArrayLike) -> float | None:
    """Randolph's free-marginal multirater kappa (chance = 1 / n_classes); same None rule."""
    rows = _equal_raters(counts)
    if rows is None:
        return None
    return _multirater_kappa(rows, 1.0 / rows.shape[1])


def kappa_from_tables(tables: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cohen's kappa, observed and chance agreement for a stack of k x k contingency tables.

    Entries are NaN where a table is empty or chance agreement is 1 (kappa undefined).
    """
    stack = np.asarray(tables, dtype=np.float64)
    n = stack.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.trace(stack, axis1=1, axis2=2) / n
        chance = (stack.sum(axis=2) * stack.sum(axis=1)).sum(axis=1) / n**2
        kappa = (observed - chance) / (1.0 - chance)
    kappa[~(chance < 1.0)] = np.nan
    return kappa, observed, chance


def cohen_kappa(a: ArrayLike, b: ArrayLike, n_classes: int | None = None) -> float | None:
    """Cohen's kappa between two raters' parallel label codes; None when undefined."""
    first, second = np.asarray(a), np.asarray(b)
    k = (
        n_classes
        if n_classes is not None
        else int(max(first.max(initial=1), second.max(initial=1))) + 1
    )
    check_count("n_classes", k, 2)
    first, second = as_codes("a", first, k), as_codes("b", second, k)
    if first.shape != second.shape:
        raise ValueError(f"a and b must have the same length, got {first.size} and {second.size}")
    table = np.bincount(first * k + second, minlength=k * k).reshape(1, k, k)
    kappa = kappa_from_tables(table)[0][0]
    return None if np.isnan(kappa) else float(kappa)


def label_pairs(items: IntArray, workers: IntArray, labels: IntArray) -> tuple[IntArray, ...]:
    """Every pair of labels on the same item: (worker_a, worker_b, label_a, label_b), a < b."""
    order = np.lexsort((workers, items))
    items, workers, labels = items[order], workers[order], labels[order]
    most = int(np.bincount(items).max(initial=0))
    firsts, seconds = [], []
    # Loop over the offset within an item (bounded by the labels per item), not over labels.
    for offset in range(1, most):
        same = np.flatnonzero(items[offset:] == items[:-offset])
        firsts.append(same)
        seconds.append(same + offset)
    first = np.concatenate(firsts) if firsts else np.zeros(0, np.int64)
    second = np.concatenate(seconds) if seconds else np.zeros(0, np.int64)
    # A worker who labelled an item twice is not a pair of raters.
    distinct = workers[first] != workers[second]
    first, second = first[distinct], second[distinct]
    return workers[first], workers[second], labels[first], labels[second]


def pairwise_cohen_kappa(
    items: ArrayLike,
    workers: ArrayLike,
    labels: ArrayLike,
    n_items: int,
    n_workers: int,
    n_classes: int,
    *,
    min_shared: int = 10,
) -> float | None:
    """Mean Cohen's kappa over worker pairs sharing at least ``min_shared`` items; None if none."""
    item_codes, worker_codes, label_codes = check_labels(
        items, workers, labels, n_items, n_workers, n_classes
    )
    check_count("min_shared", min_shared, 1)
    worker_a, worker_b, label_a, label_b = label_pairs(item_codes, worker_codes, label_codes)
    pair_ids, pair_index = np.unique(worker_a * n_workers + worker_b, return_inverse=True)
    k = n_classes
    cells = pair_index * k * k + label_a * k + label_b
    tables = np.bincount(cells, minlength=pair_ids.size * k * k).reshape(-1, k, k)
    tables = tables[tables.sum(axis=(1, 2)) >= min_shared]
    kappa = kappa_from_tables(tables)[0]
    kappa = kappa[~np.isnan(kappa)]
    return float(kappa.mean()) if kappa.size else None


def agreement_summary(
    items: ArrayLike, labels: ArrayLike, n_items: int, n_classes: int
) -> dict[str, float | None]:
    """Krippendorff's nominal alpha and Fleiss' kappa of a label set, as the report shows them."""
    counts = label_counts(items, labels, n_items, n_classes)
    return {
        "krippendorff_alpha": krippendorff_alpha_counts(counts),
        "fleiss_kappa": fleiss_kappa(counts),
    }
