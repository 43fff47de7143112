"""Selectors of model problems: the problems with their figures per model version, the candidate
comparison a model's CI asks for, one problem's patterns, and prediction monitoring by day."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models import Avg, Count, F
from django.db.models.functions import TruncDate
from django.utils import timezone

from core.exceptions import InputError, InvalidInput, NotFound
from core.permissions import Role, check_role
from labelling.models import Evaluation, ModelVersion, Prediction, Problem, ProblemItem, Project
from labelling.numerics.problems import distribution, distribution_shift, spread
from labelling.selectors import User, project_role
from labelling.services.evaluation import trusted_labels


def problem_for_user(*, user: User, problem_id: int, roles: Collection[Role]) -> Problem:
    """A problem, if the user holds one of `roles` in its project."""
    problem = Problem.objects.select_related("project").filter(pk=problem_id).first()
    if problem is None:
        raise NotFound("problem not found")
    check_role(project_role(user, problem.project), roles, "problem")
    return problem


def problems_ordered(project: Project) -> list[Problem]:
    """The project's problems, highest priority first (unmeasured ones last, by harm)."""
    problems = Problem.objects.filter(project=project).annotate(n_items=Count("links"))
    return list(problems.order_by(F("priority").desc(nulls_last=True), "-harm", "name"))


def _figures(row: Evaluation) -> dict[str, Any]:
    return {
        "n": row.n,
        "positives": row.positives,
        "errors": row.errors,
        "false_positives": row.false_positives,
        "false_negatives": row.false_negatives,
        "error_rate": _round(row.error_rate),
        "auc": _round(row.auc),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def model_version_output(version: ModelVersion) -> dict[str, Any]:
    """A candidate model as the report gives it."""
    return {
        "name": version.name,
        "first_seen_at": version.first_seen_at.isoformat(),
        "last_import_at": version.last_import_at.isoformat(),
        "note": version.note,
        "link": version.link,
        "git_hash": version.git_hash,
    }


def _problem(problem: Problem, figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": problem.pk,
        "name": problem.name,
        "description": problem.description,
        "status": problem.status,
        "harm": problem.harm,
        "reporter": problem.reporter,
        "priority": _round(problem.priority),
        "n_items": getattr(problem, "n_items", None),
        "figures": figures,
    }


def problems_report(project: Project) -> dict[str, Any]:
    """Every problem with each model version's figures (versions in time order), the test split's
    figures, and when they were computed: the JSON the CLI and the API give."""
    versions = list(ModelVersion.objects.filter(project=project).order_by("first_seen_at", "id"))
    by_problem: dict[int | None, dict[str, dict[str, Any]]] = defaultdict(dict)
    computed = None
    rows = Evaluation.objects.filter(project=project).select_related("model_version")
    for row in rows.order_by("model_version__first_seen_at", "model_version_id"):
        by_problem[row.problem_id][row.model_version.name] = _figures(row)
        computed = max(computed or row.computed_at, row.computed_at)
    return {
        "project": project.slug,
        "threshold": project.threshold,
        "positive_label": project.positive_label,
        "computed_at": computed.isoformat() if computed else None,
        "model_versions": [model_version_output(v) for v in versions],
        "problems": [_problem(p, by_problem.get(p.pk, {})) for p in problems_ordered(project)],
        "test_split": by_problem.get(None, {}),
    }


@dataclass(frozen=True)
class Comparison:
    """Which problems of at least `min_harm` a candidate model does worse on than the deployed
    one (a higher error rate), and which it was not evaluated on at all."""

    candidate: str
    deployed: str
    min_harm: float
    worse: list[dict[str, Any]]
    missing: list[dict[str, Any]]

    @property
    def passed(self) -> bool:
        """True when the candidate is no worse anywhere it matters."""
        return not self.worse and not self.missing

    def as_dict(self) -> dict[str, Any]:
        """The comparison as the CLI and the API give it."""
        return {
            "candidate": self.candidate, "deployed": self.deployed, "min_harm": self.min_harm,
            "passed": self.passed, "worse": self.worse, "missing": self.missing,
        }  # fmt: skip


def check_comparison(
    report: dict[str, Any], candidate: Any, deployed: Any, min_harm: Any
) -> tuple[str, str, float]:
    """The comparison's arguments, checked against the report's model versions."""
    names = {v["name"] for v in report["model_versions"]}
    errors = []
    for field, value in (("candidate", candidate), ("deployed", deployed)):
        if not isinstance(value, str) or not value:
            errors.append(InputError("name a model version", field))
        elif value not in names:
            known = ", ".join(sorted(names)) or "none"
            errors.append(InputError(f"no model version {value!r} (known: {known})", field))
    harm = min_harm
    if isinstance(harm, str):
        try:
            harm = float(harm)
        except ValueError:
            harm = None
    if (
        not isinstance(harm, int | float)
        or isinstance(harm, bool)
        or not math.isfinite(harm)
        or harm < 0
    ):
        errors.append(InputError(f"must be a number ≥ 0, got {min_harm!r}", "min_harm"))
    if errors:
        raise InvalidInput("invalid comparison", errors=errors)
    return candidate, deployed, float(harm)


def compare_versions(
    report: dict[str, Any], *, candidate: str, deployed: str, min_harm: float
) -> Comparison:
    """Compare a candidate with the deployed model on every problem of harm ≥ min_harm that the
    deployed model was evaluated on."""
    worse, missing = [], []
    for problem in report["problems"]:
        old = problem["figures"].get(deployed)
        if problem["harm"] < min_harm or old is None:
            continue
        new = problem["figures"].get(candidate)
        brief = {"problem": problem["name"], "id": problem["id"], "harm": problem["harm"]}
        if new is None:
            missing.append(brief)
        elif new["error_rate"] > old["error_rate"]:
            worse.append(
                {**brief, "candidate_error_rate": new["error_rate"],
                 "deployed_error_rate": old["error_rate"]}
            )  # fmt: skip
    return Comparison(candidate, deployed, min_harm, worse, missing)


def problem_patterns(problem: Problem) -> dict[str, Any]:
    """One problem's patterns: each item's trusted label beside every model version's prediction
    (p(positive) and the call at the threshold)."""
    project = problem.project
    positive = project.labels.index(project.positive_label)
    links = (
        ProblemItem.objects.filter(problem=problem)
        .select_related("item")
        .order_by("item__external_id")
    )
    items = [link.item for link in links]
    trusted = trusted_labels(project, [item.pk for item in items])
    versions = list(ModelVersion.objects.filter(project=project).values_list("name", flat=True))
    calls: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    rows = Prediction.objects.filter(item_id__in=[item.pk for item in items])
    for item_id, version, probs in rows.values_list("item_id", "model_version", "probabilities"):
        score = float(probs[positive])
        truth = trusted.get(item_id)
        call = score >= project.threshold
        wrong = None if truth is None else call != (truth == project.positive_label)
        calls[item_id][version] = {"score": round(score, 4), "positive": call, "wrong": wrong}
    return {
        "versions": versions,
        "rows": [
            {
                "item": item,
                "trusted": trusted.get(item.pk),
                "calls": [calls[item.pk].get(v) for v in versions],
            }
            for item in items
        ],
    }


def _training_reference(
    project: Project, version: str, days: dict[Any, np.ndarray]
) -> tuple[np.ndarray, str]:
    """The training-time class counts: the version's predictions on split "train" items, else
    its earliest day."""
    labels = project.labels
    rows = (
        Prediction.objects.filter(item__project=project, model_version=version, item__split="train")
        .values_list("predicted_label")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = np.zeros(len(labels))
    for label, n in rows:
        if label in labels:
            counts[labels.index(label)] += n
    if counts.sum() > 0:
        return counts, 'split "train"'
    if not days:
        return counts, "none"
    first = min(days)
    return days[first], f"earliest day ({first.isoformat()})"


def _shares(labels: list[str], counts: np.ndarray) -> dict[str, float]:
    return {
        label: round(float(share), 4)
        for label, share in zip(labels, distribution(counts), strict=True)
    }


def prediction_monitoring(project: Project, version: str) -> dict[str, Any]:
    """Per day of a model version's predictions: how many, the mean and spread of the top
    confidence, the predicted class distribution and its shift from the training-time one, flagged
    beyond QUORUM_DRIFT_MAX_SHIFT."""
    labels = project.labels
    base = Prediction.objects.filter(item__project=project, model_version=version)
    dated = base.annotate(day=TruncDate("created_at"))
    stats = (
        dated.values("day")
        .annotate(
            n=Count("id"), mean=Avg("confidence"), squares=Avg(F("confidence") * F("confidence"))
        )
        .order_by("day")
    )
    classes: dict[Any, np.ndarray] = defaultdict(lambda: np.zeros(len(labels)))
    per_class = dated.values("day", "predicted_label").annotate(count=Count("id")).order_by()
    for day, label, count in per_class.values_list("day", "predicted_label", "count"):
        if label in labels:
            classes[day][labels.index(label)] += count
    reference, source = _training_reference(project, version, dict(classes))
    bound = float(settings.DRIFT_MAX_SHIFT)
    days = []
    for figures in stats:
        n = figures["n"]
        sp = spread(n, figures["mean"] * n, figures["squares"] * n)
        counts = classes[figures["day"]]
        shift = distribution_shift(reference, counts)
        days.append({
            "day": figures["day"].isoformat(), "n": n, "mean_confidence": round(sp.mean, 4),
            "std_confidence": round(sp.std, 4),
            "classes": _shares(labels, counts),
            "shift": None if math.isnan(shift) else round(shift, 4),
            "flagged": bool(not math.isnan(shift) and shift > bound),
        })  # fmt: skip
    return {
        "model_version": version,
        "reference": source,
        "reference_classes": _shares(labels, reference),
        "bound": bound,
        "days": days,
        # None when the version made no predictions today.
        "flagged_today": next(
            (day["flagged"] for day in days if day["day"] == timezone.localdate().isoformat()), None
        ),
    }
