"""Problems and candidate models: figures on the latest trusted labels, re-evaluated when those
change, priority order, new patterns queued, and bad input refused whole."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from core.exceptions import InvalidInput
from core.permissions import Role
from labelling.models import (
    Escalation,
    Evaluation,
    Item,
    ModelVersion,
    Problem,
    ProblemItem,
    Project,
    QueueEntry,
)
from labelling.problems import problems_report
from labelling.services.consensus import consensus_compute
from labelling.services.evaluation import evaluation_compute
from labelling.services.labellers import labeller_create
from labelling.services.labels import labels_import
from labelling.services.problems import ProblemChange, problem_create, problem_update
from labelling.services.review import Decision, escalation_resolve
from labelling.services.thresholds import project_threshold_set
from tests.labelling.problem_data import DOCTORS, VETS, build, gold, payload, predict

pytestmark = pytest.mark.usefixtures("eager_jobs")


@pytest.fixture
def built(make_project: Callable[..., Project]) -> tuple[Project, Problem, Problem]:
    project = make_project(
        overlap={"min": 2, "max": 2, "target_confidence": 0.95},
        escalation={"below_confidence": 0.9, "audit_fraction": 0},
    )
    doctors, vets = build(project)
    return project, doctors, vets


def rate(problem: Problem, version: str) -> float | None:
    row = Evaluation.objects.get(problem=problem, model_version__name=version)
    return row.error_rate


def test_every_version_is_evaluated_on_every_problem(built: Any) -> None:
    project, _, _ = built
    report = problems_report(project)
    figures = {p["name"]: p["figures"] for p in report["problems"]}
    assert figures[DOCTORS]["m1"] == {
        "n": 4, "positives": 2, "errors": 2, "false_positives": 2, "false_negatives": 0,
        "error_rate": 0.5, "auc": 0.25,
    }  # fmt: skip
    assert figures[DOCTORS]["m2"]["error_rate"] == 0.25
    assert figures[DOCTORS]["m2"]["false_negatives"] == 1
    assert figures[VETS]["m1"]["error_rate"] == 0.0
    assert figures[VETS]["m2"]["error_rate"] == 1.0
    assert figures[VETS]["m2"]["auc"] == 0.0
    assert [v["name"] for v in report["model_versions"]] == ["m1", "m2"]


def test_problems_are_ordered_by_error_times_harm(built: Any) -> None:
    project, doctors, vets = built
    doctors.refresh_from_db()
    vets.refresh_from_db()
    assert (doctors.priority, vets.priority) == (pytest.approx(0.5), pytest.approx(1.0))
    assert [p["name"] for p in problems_report(project)["problems"]] == [VETS, DOCTORS]
    # Harm 5 on the doctors: 0.25 × 5 = 1.25 puts them first.
    problem_update(problem=doctors, user=None, change=ProblemChange(harm=5))
    evaluation_compute(project=project)
    assert [p["name"] for p in problems_report(project)["problems"]] == [DOCTORS, VETS]


def test_a_changed_gold_answer_re_evaluates_every_version(
    built: Any, django_capture_on_commit_callbacks: Any
) -> None:
    project, doctors, _ = built
    with django_capture_on_commit_callbacks(execute=True):
        gold(project, {"d1": "match"})
    # d1 is now a positive: m1's 0.7 is right, m2's 0.2 a false negative.
    assert rate(doctors, "m1") == pytest.approx(0.25)
    assert rate(doctors, "m2") == pytest.approx(0.5)
    doctors.refresh_from_db()
    assert doctors.priority == pytest.approx(1.0)


def test_a_threshold_change_re_evaluates(
    built: Any, django_capture_on_commit_callbacks: Any
) -> None:
    project, doctors, _ = built
    with django_capture_on_commit_callbacks(execute=True):
        project_threshold_set(project=project, threshold=0.95, model_version=None, user=None)
    # Nothing is called positive: the two positives are missed by both versions.
    assert rate(doctors, "m1") == pytest.approx(0.5)
    row = Evaluation.objects.get(problem=doctors, model_version__name="m1")
    assert (row.false_positives, row.false_negatives, row.threshold) == (0, 2, 0.95)


def _split_crowd(project: Project, key: str) -> None:
    rows = "\n".join(
        json.dumps({"external_id": key, "labeller": f"w{i}", "label": label})
        for i, label in enumerate(["match", "no_match"])
    )
    labels_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")


def test_new_patterns_are_queued_and_count_once_the_crowd_approves_them(
    built: Any, django_capture_on_commit_callbacks: Any
) -> None:
    project, _, vets = built
    problem_update(
        problem=vets,
        user=None,
        change=ProblemChange(patterns=[{"external_id": "v2", "payload": payload("v2")}]),
    )
    item = Item.objects.get(external_id="v2")
    entry = QueueEntry.objects.get(item=item)
    assert (item.source, item.state, entry.rule) == ("problem", "queued", "problem")
    # Ahead of everything queued before it.
    assert entry.priority == QueueEntry.objects.order_by("priority").first().priority  # type: ignore[union-attr]
    predict(project, "m2", {"v2": 0.9})
    rows = "\n".join(
        json.dumps({"external_id": "v2", "labeller": f"w{i}", "label": "match"}) for i in range(2)
    )
    labels_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")
    with django_capture_on_commit_callbacks(execute=True):
        consensus_compute(project=project)
    assert Item.objects.get(external_id="v2").state == "approved"
    row = Evaluation.objects.get(problem=vets, model_version__name="m2")
    assert (row.n, row.errors) == (3, 2)


def test_an_expert_decision_is_a_trusted_label(
    built: Any, django_capture_on_commit_callbacks: Any
) -> None:
    project, _, vets = built
    predict(project, "m1", {"x0": 0.9})
    problem_update(problem=vets, user=None, change=ProblemChange(items=["x0"]))
    _split_crowd(project, "x0")
    consensus_compute(project=project)
    escalation = Escalation.objects.get(item__external_id="x0", resolved_at__isnull=True)
    expert, _ = labeller_create(project=project, username="ezra", role=Role.EXPERT)
    with django_capture_on_commit_callbacks(execute=True):
        escalation_resolve(
            escalation_id=escalation.pk, user=expert.user, decision=Decision("label", "no_match")
        )
    row = Evaluation.objects.get(problem=vets, model_version__name="m1")
    assert (row.n, row.false_positives) == (3, 1)


def test_an_import_records_its_model_versions_once(built: Any) -> None:
    project, _, _ = built
    first = ModelVersion.objects.get(project=project, name="m2")
    predict(project, "m2", {"n0": 0.5})
    again = ModelVersion.objects.get(project=project, name="m2")
    assert again.first_seen_at == first.first_seen_at
    assert again.last_import_at > first.last_import_at
    assert ModelVersion.objects.filter(project=project).count() == 2


def test_the_test_split_is_evaluated_too(make_project: Callable[..., Project]) -> None:
    project = make_project()
    predict(project, "m1", {"t0": 0.9, "t1": 0.8}, split="test")
    gold(project, {"t0": "match", "t1": "no_match"})
    evaluation_compute(project=project)
    assert problems_report(project)["test_split"]["m1"]["errors"] == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (ProblemChange(name=""), "name"),
        (ProblemChange(name="x", harm=0), "harm"),
        (ProblemChange(name="x", harm="high"), "harm"),
        (ProblemChange(name="x", status="done"), "status"),
        (ProblemChange(name="x", items=["nope"]), "items"),
        (
            ProblemChange(name="x", patterns=[{"external_id": "d0", "payload": {"a": 1}}]),
            "patterns",
        ),
        (ProblemChange(name="x", patterns=[{"external_id": "p9"}]), "patterns[0].payload"),
        (ProblemChange(name=VETS), "name"),
    ],
)
def test_bad_input_is_named_and_nothing_is_written(
    built: Any, change: ProblemChange, field: str
) -> None:
    project, _, _ = built
    before = (Problem.objects.count(), Item.objects.count(), ProblemItem.objects.count())
    with pytest.raises(InvalidInput) as caught:
        problem_create(project=project, user=None, change=change)
    assert field in [error.field for error in caught.value.errors]
    assert (Problem.objects.count(), Item.objects.count(), ProblemItem.objects.count()) == before
