"""ROC and precision-recall curves, and decision-threshold choosers, for binary problems.

Inputs are trusted labels ``y`` (0/1 or bool) and scores ``s`` (the model's probability of the
positive class, or any finite real score). A threshold ``t`` means "predict positive when
``s >= t``". Tied scores form one threshold step, as in scikit-learn: every item with the same
score is predicted the same way.

Conventions (and where they differ from scikit-learn):

- Curve thresholds are the distinct scores in DECREASING order, for both curves.
  ``roc_curve`` starts with the point (fpr 0, tpr 0) at threshold ``+inf``; no points are dropped
  (scikit-learn's ``drop_intermediate`` is not applied). ``precision_recall_curve`` has one point
  per distinct score and no artificial (recall 0, precision 1) end point.
- ``average_precision`` is the step-wise sum ``sum((R_i - R_{i-1}) * P_i)`` (scikit-learn's
  definition, no interpolation). No trapezoidal PR-AUC is given: linear interpolation between PR
  points is optimistic.
- Degenerate data raise ValueError rather than returning NaN: the ROC curve, its AUC and the
  threshold choosers need both classes; the PR curve and average precision need a positive.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray

from labelling.numerics.uncertainty import FloatArray, check_number


@dataclass(frozen=True)
class ThresholdChoice:
    """A chosen decision threshold and what it achieves on the labelled data."""

    threshold: float  # predict positive when s >= threshold (+inf: predict nothing positive)
    precision: float  # NaN when nothing is predicted positive
    recall: float
    fpr: float
    tpr: float  # equals recall; kept so ROC-minded callers need no translation
    cost: float | None = None  # cost_fp * FP + cost_fn * FN over the labelled set (cost chooser)
    expected_cost: float | None = None  # cost per labelled item, an estimate for future items


@dataclass(frozen=True)
class _Steps:
    """Cumulative counts at each distinct score, highest score first."""

    thresholds: FloatArray
    tp: FloatArray
    fp: FloatArray
    n_pos: int
    n_neg: int


def _check_inputs(y: ArrayLike, s: ArrayLike) -> tuple[NDArray[np.bool_], FloatArray]:
    """Labels as booleans and scores as finite floats, equal lengths, or ValueError."""
    labels = np.asarray(y)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError("y: must be a non-empty 1-d array of 0/1 labels")
    if labels.dtype != np.bool_ and not np.isin(labels, (0, 1)).all():
        raise ValueError("y: labels must be 0 or 1")
    try:
        scores = np.asarray(s, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"s: must be numeric ({exc})") from exc
    if scores.shape != labels.shape:
        raise ValueError(f"s: must have the same length as y ({labels.size}), got {scores.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("s: scores must be finite")
    return labels.astype(bool), scores


def _steps(y: ArrayLike, s: ArrayLike) -> _Steps:
    """Cumulative true and false positives at each distinct score, highest first."""
    labels, scores = _check_inputs(y, s)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    # The last item of each run of equal scores closes that threshold's step.
    ends = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]
    tp = np.cumsum(hits, dtype=np.float64)[ends]
    fp = (ends + 1.0) - tp
    n_pos = int(np.count_nonzero(labels))
    return _Steps(ranked[ends], tp, fp, n_pos, labels.size - n_pos)


def _need_both_classes(steps: _Steps, what: str) -> None:
    """Refuse data with only one class, for which rates over the missing class are undefined."""
    if steps.n_pos == 0 or steps.n_neg == 0:
        raise ValueError(f"y: {what} needs both positive and negative labels")


def roc_curve(y: ArrayLike, s: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(fpr, tpr, thresholds), thresholds decreasing from +inf, one point per distinct score."""
    steps = _steps(y, s)
    _need_both_classes(steps, "a ROC curve")
    fpr = np.r_[0.0, steps.fp / steps.n_neg]
    tpr = np.r_[0.0, steps.tp / steps.n_pos]
    return fpr, tpr, np.r_[np.inf, steps.thresholds]


def roc_auc(y: ArrayLike, s: ArrayLike) -> float:
    """Area under the ROC curve by the trapezoid rule (equals Mann-Whitney U / (P * N))."""
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2.0)


def precision_recall_curve(y: ArrayLike, s: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(precision, recall, thresholds), thresholds decreasing, one point per distinct score."""
    steps = _steps(y, s)
    if steps.n_pos == 0:
        raise ValueError("y: a precision-recall curve needs at least one positive label")
    # Every step predicts at least one item positive, so tp + fp > 0.
    return steps.tp / (steps.tp + steps.fp), steps.tp / steps.n_pos, steps.thresholds


def average_precision(y: ArrayLike, s: ArrayLike) -> float:
    """Step-wise average precision: sum over thresholds of (recall gained) x precision."""
    precision, recall, _ = precision_recall_curve(y, s)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def threshold_for_cost(
    y: ArrayLike, s: ArrayLike, cost_fp: float, cost_fn: float
) -> ThresholdChoice:
    """The threshold minimising cost_fp*FP + cost_fn*FN; ties go to the higher threshold."""
    fp_weight = _non_negative(cost_fp, "cost_fp")
    fn_weight = _non_negative(cost_fn, "cost_fn")
    steps = _steps(y, s)
    _need_both_classes(steps, "a threshold choice")
    # Candidate 0 is "+inf: predict nothing", which wins when false positives are dear enough.
    tp, fp = np.r_[0.0, steps.tp], np.r_[0.0, steps.fp]
    costs = fp_weight * fp + fn_weight * (steps.n_pos - tp)
    best = int(np.argmin(costs))  # first minimum = highest threshold = fewest items flagged
    total = float(costs[best])
    choice = _choice(steps, best - 1) if best > 0 else _predict_nothing()
    n_items = steps.n_pos + steps.n_neg
    return replace(choice, cost=total, expected_cost=total / n_items)


def threshold_for_precision(y: ArrayLike, s: ArrayLike, target: float) -> ThresholdChoice | None:
    """Lowest threshold whose precision >= target (max recall at that precision), else None."""
    goal = _target(target)
    steps = _steps(y, s)
    _need_both_classes(steps, "a threshold choice")
    reached = np.flatnonzero(steps.tp / (steps.tp + steps.fp) >= goal)
    return _choice(steps, int(reached[-1])) if reached.size else None


def threshold_for_recall(y: ArrayLike, s: ArrayLike, target: float) -> ThresholdChoice:
    """Highest threshold whose recall >= target (always reachable: the lowest score gives 1)."""
    goal = _target(target)
    steps = _steps(y, s)
    _need_both_classes(steps, "a threshold choice")
    # Recall never falls as the threshold drops, so the first step reaching the goal is highest.
    first = int(np.argmax(steps.tp / steps.n_pos >= goal))
    return _choice(steps, first)


def operating_point(y: ArrayLike, s: ArrayLike, threshold: float) -> ThresholdChoice:
    """Precision, recall and false-positive rate when predicting positive for s >= threshold."""
    truth, scores = _check_inputs(y, s)
    predicted = scores >= threshold
    tp = float(np.count_nonzero(predicted & truth))
    fp = float(np.count_nonzero(predicted & ~truth))
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    return ThresholdChoice(
        threshold=float(threshold),
        precision=tp / (tp + fp) if tp + fp else np.nan,
        recall=tp / n_pos if n_pos else np.nan,
        fpr=fp / n_neg if n_neg else np.nan,
        tpr=tp / n_pos if n_pos else np.nan,
    )


def _choice(steps: _Steps, i: int) -> ThresholdChoice:
    """The operating point at distinct-score step i."""
    tp, fp = float(steps.tp[i]), float(steps.fp[i])
    recall = tp / steps.n_pos
    return ThresholdChoice(
        threshold=float(steps.thresholds[i]),
        precision=tp / (tp + fp),
        recall=recall,
        fpr=fp / steps.n_neg,
        tpr=recall,
    )


def _predict_nothing() -> ThresholdChoice:
    """The operating point above every score: nothing is predicted positive."""
    return ThresholdChoice(threshold=np.inf, precision=np.nan, recall=0.0, fpr=0.0, tpr=0.0)


def _non_negative(value: object, name: str) -> float:
    """A finite number >= 0, or ValueError naming it."""
    number = check_number(value, name)
    if number < 0:
        raise ValueError(f"{name}: must be >= 0, got {number}")
    return number


def _target(value: object) -> float:
    """A precision or recall target in (0, 1], or ValueError."""
    number = check_number(value, "target")
    if not 0.0 < number <= 1.0:
        raise ValueError(f"target: must be in (0, 1], got {number}")
    return number
