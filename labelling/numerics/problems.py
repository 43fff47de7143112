"""Figures of model versions on problems, and of their predictions over time: pure numpy.

A prediction is positive when p(positive label) ≥ the threshold; a trusted label is positive when
it is the positive label (multi-class projects: the positive label against the rest).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from labelling.numerics.thresholds import roc_auc


@dataclass(frozen=True)
class ErrorFigures:
    """How a model version does on a set of trusted-labelled items at one threshold."""

    n: int
    positives: int
    false_positives: int
    false_negatives: int
    # None where there is nothing to measure: no items (error rate), or one class only (AUC).
    error_rate: float | None
    auc: float | None

    @property
    def errors(self) -> int:
        """Mistakes at the threshold: false positives plus false negatives."""
        return self.false_positives + self.false_negatives


def error_figures(y: ArrayLike, s: ArrayLike, threshold: float) -> ErrorFigures:
    """Error rate, false positives and negatives at `threshold`, and ROC AUC where both classes
    are present; `y` says whether each trusted label is positive, `s` is p(positive)."""
    truth = np.asarray(y, dtype=bool)
    scores = np.asarray(s, dtype=float)
    if truth.shape != scores.shape or truth.ndim != 1:
        raise ValueError("y and s must be one-dimensional and of the same length")
    predicted = scores >= threshold
    fp = int(np.count_nonzero(predicted & ~truth))
    fn = int(np.count_nonzero(~predicted & truth))
    n, positives = int(truth.size), int(np.count_nonzero(truth))
    both = 0 < positives < n
    return ErrorFigures(
        n=n,
        positives=positives,
        false_positives=fp,
        false_negatives=fn,
        error_rate=(fp + fn) / n if n else None,
        auc=roc_auc(truth, scores) if both else None,
    )


def priority(error_rate: float | None, harm: float) -> float | None:
    """A problem's priority: its normalised error (the error rate, so that problems with many and
    few patterns compare) times its harm factor; None while the error cannot be measured."""
    if error_rate is None:
        return None
    return float(error_rate) * float(harm)


@dataclass(frozen=True)
class Spread:
    """Mean and standard deviation of a sample, from its count, sum and sum of squares."""

    mean: float
    std: float


def spread(n: int, total: float, squares: float) -> Spread:
    """Mean and (population) standard deviation from running sums; NaN for an empty sample."""
    if n <= 0:
        return Spread(math.nan, math.nan)
    mean = total / n
    # Rounding can make the variance a hair below zero for constant samples.
    return Spread(mean, math.sqrt(max(squares / n - mean * mean, 0.0)))


def distribution(counts: ArrayLike) -> np.ndarray:
    """Counts per class as shares summing to 1 (all zero for no counts)."""
    values = np.asarray(counts, dtype=float)
    if values.ndim != 1 or (values < 0).any():
        raise ValueError("counts must be a one-dimensional array of non-negative numbers")
    total = values.sum()
    return values / total if total > 0 else np.zeros_like(values)


def distribution_shift(reference: ArrayLike, current: ArrayLike) -> float:
    """Total variation distance between two class-count vectors: half the sum of the absolute
    differences of their shares, 0 (same) to 1 (disjoint); NaN when either is empty."""
    p, q = np.asarray(reference, dtype=float), np.asarray(current, dtype=float)
    if p.shape != q.shape:
        raise ValueError("both distributions must cover the same classes")
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    return float(np.abs(distribution(p) - distribution(q)).sum() / 2.0)
