"""Choosing the decision threshold from trusted labels: curves, AUC and suggested thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labelling.models import Prediction, Project
from labelling.numerics import thresholds as th

MAX_CURVE_POINTS = 200


@dataclass(frozen=True)
class Goals:
    """What the engineer asks of the threshold: a cost ratio, or a precision or recall target."""

    cost_fp: float = 1.0
    cost_fn: float = 1.0
    precision: float | None = None
    recall: float | None = None


@dataclass
class ThresholdReport:
    """The trusted labels' verdict on a model version: curves, areas and suggestions."""

    model_version: str
    n: int
    positives: int
    auc: float | None = None
    average_precision: float | None = None
    roc: list[tuple[float, float]] = field(default_factory=list)
    pr: list[tuple[float, float]] = field(default_factory=list)
    current: th.ThresholdChoice | None = None
    suggestions: dict[str, th.ThresholdChoice | None] = field(default_factory=dict)
    problem: str = ""


def trusted_scores(project: Project, model_version: str) -> tuple[np.ndarray, np.ndarray]:
    """(y, s) over items with a trusted label: y = label is the positive one, s = p(positive)."""
    positive = project.labels.index(project.positive_label)
    rows = Prediction.objects.filter(
        item__project=project, model_version=model_version, item__deactivated_at__isnull=True
    ).exclude(item__gold_label="")
    pairs = list(rows.values_list("item__gold_label", "probabilities"))
    y = np.fromiter((label == project.positive_label for label, _ in pairs), bool, len(pairs))
    s = np.fromiter((probs[positive] for _, probs in pairs), float, len(pairs))
    return y, s


def _thin(xs: np.ndarray, ys: np.ndarray) -> list[tuple[float, float]]:
    # A chart needs a few hundred points, whatever the number of labelled items.
    step = max(1, math.ceil(xs.size / MAX_CURVE_POINTS))
    keep = np.r_[np.arange(0, xs.size, step), xs.size - 1] if xs.size else np.arange(0)
    return [(float(xs[i]), float(ys[i])) for i in np.unique(keep)]


def threshold_report(project: Project, model_version: str, goals: Goals) -> ThresholdReport:
    """Curves and suggested thresholds for a model version, from the project's trusted labels."""
    y, s = trusted_scores(project, model_version)
    report = ThresholdReport(model_version=model_version, n=int(y.size), positives=int(y.sum()))
    if y.size == 0 or y.all() or not y.any():
        report.problem = "needs trusted labels of both classes (import gold answers first)"
        return report
    fpr, tpr, _ = th.roc_curve(y, s)
    precision, recall, _ = th.precision_recall_curve(y, s)
    report.roc, report.pr = _thin(fpr, tpr), _thin(recall, precision)
    report.auc, report.average_precision = th.roc_auc(y, s), th.average_precision(y, s)
    report.current = th.operating_point(y, s, project.threshold)
    report.suggestions["cost"] = th.threshold_for_cost(y, s, goals.cost_fp, goals.cost_fn)
    if goals.precision is not None:
        report.suggestions["precision"] = th.threshold_for_precision(y, s, goals.precision)
    if goals.recall is not None:
        report.suggestions["recall"] = th.threshold_for_recall(y, s, goals.recall)
    return report


def operating_point_basis(project: Project, model_version: str, threshold: float) -> dict[str, Any]:
    """The figures to record beside a threshold change: how it does on the trusted labels."""
    y, s = trusted_scores(project, model_version)
    basis: dict[str, Any] = {"model_version": model_version, "trusted_labels": int(y.size)}
    if y.size:
        point = th.operating_point(y, s, threshold)
        basis.update(
            {
                key: (None if math.isnan(value) else round(value, 6))
                for key, value in (
                    ("precision", point.precision),
                    ("recall", point.recall),
                    ("fpr", point.fpr),
                )
            }
        )
    return basis
