"""Labels from elsewhere, consensus, item states, labeller reliability, rejecting a labeller."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone
from rest_framework.test import APIClient

from core.exceptions import InvalidInput
from core.permissions import Role
from labelling.models import (
    Consensus,
    Escalation,
    Item,
    Label,
    Labeller,
    LabellerDecision,
    Project,
    QueueEntry,
)
from labelling.policy import parse_policy
from labelling.services.consensus import consensus_catch_up, consensus_compute
from labelling.services.gold import gold_import
from labelling.services.imports import predictions_import
from labelling.services.labellers import labeller_reject
from labelling.services.labels import labels_import
from labelling.services.queueing import queue_select

pytestmark = pytest.mark.django_db


def label_rows(answers: dict[str, dict[str, str]]) -> bytes:
    """JSON Lines of {item: {labeller: label}}."""
    lines = [
        json.dumps({"external_id": item, "labeller": who, "label": label, "duration_ms": 3000})
        for item, by in answers.items()
        for who, label in by.items()
    ]
    return "\n".join(lines).encode()


def load(project: Project, answers: dict[str, dict[str, str]]) -> None:
    labels_import(project=project, stream=io.BytesIO(label_rows(answers)), fmt="jsonl")


def simulated_crowd(
    n_items: int = 160, seed: int = 3
) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """Five careful labellers (95 % right) and one who answers at random, on every item."""
    rng = np.random.default_rng(seed)
    truth = {f"i{k}": str(rng.choice(["match", "no_match"])) for k in range(n_items)}
    flip = {"match": "no_match", "no_match": "match"}
    answers: dict[str, dict[str, str]] = {}
    for item, answer in truth.items():
        by = {f"good{w}": answer if rng.random() < 0.95 else flip[answer] for w in range(5)}
        by["random"] = str(rng.choice(["match", "no_match"]))
        answers[item] = by
    return answers, truth


def test_import_labels_creates_items_and_labellers_and_is_idempotent(project: Project) -> None:
    content = label_rows({"a1": {"w1": "match", "w2": "no_match"}, "a2": {"w1": "match"}})

    first = labels_import(project=project, stream=io.BytesIO(content), fmt="jsonl")
    again = labels_import(project=project, stream=io.BytesIO(content), fmt="jsonl")

    assert (first.rows, first.new_items, first.new_labellers, first.new_labels) == (3, 2, 2, 3)
    assert (again.new_labels, again.unchanged) == (0, 3)
    item = Item.objects.get(external_id="a1")
    assert (item.payload, item.source, item.state) == ({}, "import", "collecting")
    label = Label.objects.filter(item=item, labeller__worker_id="w1").get()
    assert (label.value, label.source, label.duration_ms) == ("match", "import", 3000)
    assert label.batch == first.batch


def test_import_labels_keeps_the_files_timestamps(project: Project) -> None:
    row = {
        "external_id": "a1",
        "labeller": "w1",
        "label": "match",
        "created_at": "2026-11-01T10:00:00Z",
    }
    labels_import(project=project, stream=io.BytesIO(json.dumps(row).encode()), fmt="jsonl")

    assert Label.objects.get().created_at.isoformat() == "2026-11-01T10:00:00+00:00"


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"external_id": "a1", "labeller": "w1", "label": "maybe"}, "label"),
        ({"external_id": "a1", "label": "match"}, "labeller"),
        (
            {"external_id": "a1", "labeller": "w1", "label": "match", "created_at": "yesterday"},
            "created_at",
        ),
        (
            {"external_id": "a1", "labeller": "w1", "label": "match", "duration_ms": -5},
            "duration_ms",
        ),
        ({"external_id": "a1", "labeller": "w1", "label": "match", "mood": "ok"}, "mood"),
    ],
)
def test_a_bad_label_row_is_named_and_nothing_is_written(
    project: Project, row: dict[str, object], field: str
) -> None:
    content = label_rows({"a0": {"w0": "match"}}) + b"\n" + json.dumps(row).encode()

    with pytest.raises(InvalidInput) as caught:
        labels_import(project=project, stream=io.BytesIO(content), fmt="jsonl")

    assert [(e.line, e.field) for e in caught.value.errors] == [(2, field)]
    assert (
        not Label.objects.exists() and not Item.objects.exists() and not Labeller.objects.exists()
    )


def test_two_answers_of_one_labeller_for_one_item_are_refused(project: Project) -> None:
    content = b'{"external_id": "a1", "labeller": "w1", "label": "match"}\n' + (
        b'{"external_id": "a1", "labeller": "w1", "label": "no_match"}'
    )

    with pytest.raises(InvalidInput, match="label file has errors"):
        labels_import(project=project, stream=io.BytesIO(content), fmt="jsonl")


def test_aggregate_finds_the_truth_and_flags_the_random_labeller(project: Project) -> None:
    answers, truth = simulated_crowd()
    load(project, answers)

    report = consensus_compute(project=project)

    assert report.method == "dawid-skene"
    right = sum(report.items[item]["label"] == answer for item, answer in truth.items())
    assert right / len(truth) >= 0.95
    assert report.labellers["random"]["flags"] and "random" in report.labellers["random"]["flags"]
    assert report.labellers["random"]["status"] == "paused"
    assert not any(report.labellers[f"good{w}"]["flags"] for w in range(5))
    assert report.labellers["good0"]["accuracy"] > 0.85
    assert report.agreement["fleiss_kappa"] is not None
    assert LabellerDecision.objects.get().kind == "pause"
    assert Consensus.objects.count() == len(truth)


def test_the_json_report_has_exactly_the_contracts_shape(project: Project) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match", "w3": "match"}})
    out = io.StringIO()

    call_command("aggregate", "pet-match", "--json", stdout=out)

    report = json.loads(out.getvalue())
    assert set(report) == {"project", "method", "items", "labellers", "agreement"}
    # Three labels in all: too few for Dawid-Skene, so smoothed votes decide.
    assert (report["project"], report["method"]) == ("pet-match", "majority-vote")
    assert set(report["items"]["a1"]) == {"label", "confidence", "state", "n_labels"}
    assert set(report["labellers"]["w1"]) == {
        "n_labels",
        "accuracy",
        "gold_accuracy",
        "flags",
        "status",
    }
    assert set(report["agreement"]) == {"krippendorff_alpha", "fleiss_kappa"}
    assert report["items"]["a1"]["state"] == "approved"


def test_fleiss_kappa_is_null_when_items_have_unequal_numbers_of_labels(project: Project) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match"}, "a2": {"w1": "no_match"}})

    assert consensus_compute(project=project).agreement["fleiss_kappa"] is None


def test_a_split_crowd_at_the_maximum_is_escalated_with_a_reason(project: Project) -> None:
    project.overlap_min = project.overlap_max = 4
    project.save()
    load(project, {"a1": {"w1": "match", "w2": "no_match", "w3": "match", "w4": "no_match"}})

    report = consensus_compute(project=project)

    assert report.items["a1"]["state"] == "escalated"
    escalation = Escalation.objects.get()
    assert (escalation.reason, escalation.resolved_at) == ("low_confidence", None)
    consensus_compute(project=project)
    assert Escalation.objects.count() == 1


def test_a_crowd_that_contradicts_the_gold_answer_is_escalated(project: Project) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match", "w3": "match"}})
    gold_import(
        project=project,
        stream=io.BytesIO(b'{"external_id": "a1", "label": "no_match"}'),
        fmt="jsonl",
    )

    report = consensus_compute(project=project)

    assert report.items["a1"]["state"] == "escalated"
    assert Escalation.objects.get().reason == "gold_conflict"


def test_an_unsure_item_with_room_asks_for_one_more_label(project: Project) -> None:
    row = {"external_id": "a1", "payload": {}, "model_version": "m"}
    rows = json.dumps({**row, "probabilities": {"match": 0.5, "no_match": 0.5}})
    predictions_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")
    queue_select(
        project=project, policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]})
    )
    load(project, {"a1": {"w1": "match", "w2": "no_match", "w3": "match"}})

    report = consensus_compute(project=project)

    entry = QueueEntry.objects.get()
    assert report.items["a1"]["state"] == "collecting"
    assert (entry.labels_count, entry.needed, entry.collecting) == (3, 4, True)


def test_rejecting_a_labeller_voids_their_labels_reopens_items_and_changes_consensus(
    project: Project,
) -> None:
    # The bad labeller tips a 2-2 split; without them the item is a clear "match".
    load(project, {"a1": {"w1": "match", "w2": "match", "bad": "no_match", "bad2": "no_match"}})
    consensus_compute(project=project)
    bad = Labeller.objects.get(worker_id="bad")

    decision = labeller_reject(labeller=bad, user=None, reason="answers at random")

    assert (decision.kind, decision.labels_voided, decision.items_reopened) == ("reject", 1, 1)
    bad.refresh_from_db()
    assert bad.status == "rejected"
    voided = Label.objects.get(labeller=bad)
    assert voided.state == "voided" and "answers at random" in voided.void_reason
    assert Consensus.objects.get().n_labels == 3
    assert Label.objects.count() == 4


def test_rejecting_one_batch_keeps_the_labellers_other_work(project: Project) -> None:
    load(project, {"a1": {"w1": "match"}})
    second = labels_import(
        project=project, stream=io.BytesIO(label_rows({"a2": {"w1": "no_match"}})), fmt="jsonl"
    )
    w1 = Labeller.objects.get(worker_id="w1")

    labeller_reject(labeller=w1, user=None, reason="bad batch", batch=second.batch)

    assert sorted(Label.objects.values_list("item__external_id", "state")) == [
        ("a1", "valid"),
        ("a2", "voided"),
    ]
    w1.refresh_from_db()
    assert w1.status == "active"


def test_the_reject_endpoint_is_for_the_projects_engineers(
    project: Project,
    make_project: Callable[..., Project],
    engineer_api: APIClient,
    crowd_api: APIClient,
    client_for: Callable[..., APIClient],
) -> None:
    load(project, {"a1": {"w1": "match"}})
    target = Labeller.objects.get(worker_id="w1")
    outsider = client_for(make_project(slug="other"), "other-engineer", Role.ENGINEER)
    url = f"/api/v1/labellers/{target.pk}/reject"

    assert crowd_api.post(url, {"reason": "x"}, format="json").status_code == 403
    assert outsider.post(url, {"reason": "x"}, format="json").status_code == 404
    assert not Label.objects.filter(state="voided").exists()
    response = engineer_api.post(url, {"reason": "spam"}, format="json")
    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["labels_voided"]) == ("rejected", 1)


def test_approve_and_block_are_logged(project: Project, engineer_api: APIClient) -> None:
    load(project, {"a1": {"w1": "match"}})
    target = Labeller.objects.get(worker_id="w1")
    Labeller.objects.filter(pk=target.pk).update(status="paused")

    approved = engineer_api.post(f"/api/v1/labellers/{target.pk}/approve", {}, format="json")
    blocked = engineer_api.post(
        f"/api/v1/labellers/{target.pk}/block", {"reason": "spam"}, format="json"
    )
    again = engineer_api.post(f"/api/v1/labellers/{target.pk}/approve", {}, format="json")

    assert (approved.json()["status"], blocked.json()["status"]) == ("active", "blocked")
    assert again.status_code == 409
    assert list(LabellerDecision.objects.values_list("kind", flat=True)) == ["block", "approve"]


def test_the_aggregate_command_summarises_and_refuses_unknown_projects(project: Project) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match", "w3": "match"}})
    out = io.StringIO()

    call_command("aggregate", "pet-match", stdout=out)

    assert "1 items: 1 approved" in out.getvalue()
    with pytest.raises(CommandError, match="no project"):
        call_command("aggregate", "nope")


def test_import_labels_command_reads_csv(project: Project, tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("external_id,labeller,label,duration_ms\na1,w1,match,1200\na1,w2,no_match,\n")
    out = io.StringIO()

    call_command("import_labels", "pet-match", str(path), stdout=out)

    assert out.getvalue().startswith("rows: 2, new items: 1, new labellers: 2, new labels: 2")


@pytest.fixture
def inline_recomputation(settings: Any) -> None:
    """consensus_schedule recomputes at once, as with in-process jobs, even on Redis."""
    settings.CELERY_TASK_ALWAYS_EAGER = True


def stamp_labels(project: Project, at: datetime) -> None:
    Label.objects.filter(project=project).update(created_at=at)


def test_the_catch_up_recomputes_a_project_with_labels_newer_than_its_consensus(
    project: Project, inline_recomputation: None
) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match"}})
    consensus_compute(project=project)
    # Labels that arrived while no recomputation could be sent (Redis down).
    load(project, {"a1": {"w3": "match"}, "a2": {"w1": "no_match", "w2": "no_match"}})

    assert consensus_catch_up() == 1
    assert dict(Consensus.objects.values_list("item__external_id", "n_labels")) == {
        "a1": 3,
        "a2": 2,
    }


def test_the_catch_up_leaves_a_project_whose_consensus_is_current(
    project: Project, inline_recomputation: None
) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match"}})
    stamp_labels(project, timezone.now() - timedelta(hours=1))
    consensus_compute(project=project)

    assert consensus_catch_up() == 0


def test_the_catch_up_recomputes_after_a_label_stamped_before_the_last_run_but_committed_after(
    project: Project, inline_recomputation: None
) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match"}})
    stamp_labels(project, timezone.now() - timedelta(hours=1))
    consensus_compute(project=project)
    computed = Consensus.objects.get().computed_at
    # A label written while that run was computing, committed after it had read the labels.
    load(project, {"a1": {"w3": "no_match"}})
    Label.objects.filter(labeller__worker_id="w3").update(
        created_at=computed - timedelta(seconds=5)
    )

    assert consensus_catch_up() == 1
    assert Consensus.objects.get().n_labels == 3
