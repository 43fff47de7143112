"""The pages of outside crowds: the page Mechanical Turk frames, the study link of link-based
platforms, and the engineer's outside-crowds page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from core.permissions import Role
from labelling.crowd import services
from labelling.crowd.models import CrowdAssignment, CrowdBatch
from labelling.models import Label, Labeller, Project
from labelling.services.labellers import labeller_create
from tests.labelling.crowd.fakes import FakeMTurk, request_error

pytestmark = pytest.mark.django_db
SANDBOX = "https://workersandbox.mturk.com"


def published(project: Project, platform: str, size: int = 2, assignments: int = 2) -> CrowdBatch:
    batch = services.crowd_batch_create(
        project=project,
        platform=platform,
        size=size,
        reward="0.05",
        assignments=assignments,
        user=None,
    )
    return services.crowd_batch_publish(batch=batch)


@pytest.fixture
def hit(fake_mturk: FakeMTurk, make_queued: Callable[..., Project]) -> tuple[CrowdBatch, str]:
    batch = published(make_queued(2), "mturk")
    return batch, batch.tasks.order_by("id").first().remote_id  # type: ignore[union-attr]


def framed(client: Client, hit_id: str, assignment: str = "A1", **extra: str) -> Any:
    params = {
        "assignmentId": assignment,
        "hitId": hit_id,
        "workerId": "W1",
        "turkSubmitTo": SANDBOX,
        **extra,
    }
    return client.get("/ext/mturk/pet-match/", params)


def test_the_preview_shows_the_task_with_answers_disabled(hit: tuple[CrowdBatch, str]) -> None:
    _, hit_id = hit
    response = framed(Client(), hit_id, "ASSIGNMENT_ID_NOT_AVAILABLE")

    page = response.content.decode()
    assert response.status_code == 200
    assert "item 0" in page and "Preview: accept the HIT" in page
    assert page.count(" disabled>") == 2
    assert "<strong>pet</strong>" in page, "instructions are shown"


def test_only_amazons_worker_sites_may_frame_the_page(hit: tuple[CrowdBatch, str]) -> None:
    _, hit_id = hit
    response = framed(Client(), hit_id)

    policy = dict(d.strip().split(" ", 1) for d in response["Content-Security-Policy"].split(";"))
    assert policy["frame-ancestors"] == "https://www.mturk.com https://workersandbox.mturk.com"
    assert policy["form-action"] == "'self' https://www.mturk.com https://workersandbox.mturk.com"
    assert policy["script-src"] == "'self'"
    assert "X-Frame-Options" not in response
    assert Client().get("/accounts/login/")["X-Frame-Options"] == "DENY"


def test_an_answer_is_saved_first_then_posted_to_amazon(
    hit: tuple[CrowdBatch, str], fake_mturk: FakeMTurk
) -> None:
    batch, hit_id = hit
    assignment_id = fake_mturk.work(hit_id, "W1", "no_match")
    client = Client(enforce_csrf_checks=True)
    form = {
        "assignmentId": assignment_id,
        "hitId": hit_id,
        "workerId": "W1",
        "turkSubmitTo": SANDBOX,
        "label": "no_match",
        "duration_ms": "2100",
    }

    response = client.post("/ext/mturk/pet-match/", form)
    again = client.post("/ext/mturk/pet-match/", form)

    page = response.content.decode()
    assert response.status_code == 200 and again.status_code == 200
    assert f'action="{SANDBOX}/mturk/externalSubmit"' in page
    assert f'name="assignmentId" value="{assignment_id}"' in page
    assert 'name="label" value="no_match"' in page
    saved = CrowdAssignment.objects.get()
    assert (saved.status, saved.answer, saved.duration_ms) == ("received", "no_match", 2100)
    assert not Label.objects.exists(), "a label waits for Amazon to confirm the work"

    services.crowd_batch_sync(batch=batch)

    saved.refresh_from_db()
    assert saved.status == "submitted" and saved.label is not None
    assert saved.label.value == "no_match" and saved.label.labeller.worker_id == "W1"


def test_a_reload_after_saving_sends_the_saved_answer_again(
    hit: tuple[CrowdBatch, str], fake_mturk: FakeMTurk
) -> None:
    _, hit_id = hit
    form = {
        "assignmentId": "A9",
        "hitId": hit_id,
        "workerId": "W1",
        "turkSubmitTo": SANDBOX,
        "label": "match",
    }
    Client().post("/ext/mturk/pet-match/", form)

    page = framed(Client(), hit_id, "A9").content.decode()

    assert "Sending it to Mechanical Turk" in page and 'value="match"' in page


@pytest.mark.parametrize(
    ("change", "status", "text"),
    [
        ({"turkSubmitTo": "https://evil.example.com"}, 400, "must be opened from Mechanical Turk"),
        ({"turkSubmitTo": "https://www.mturk.com.evil.example"}, 400, "unknown turkSubmitTo"),
        ({"hitId": "NOPE"}, 404, "not known to Quorum"),
        ({"label": "maybe"}, 400, "must be one of match, no_match"),
        ({"workerId": ""}, 400, "workerId"),
    ],
)
def test_a_bad_submission_is_refused_and_nothing_is_saved(
    hit: tuple[CrowdBatch, str], change: dict[str, str], status: int, text: str
) -> None:
    _, hit_id = hit
    form = {
        "assignmentId": "A1",
        "hitId": hit_id,
        "workerId": "W1",
        "turkSubmitTo": SANDBOX,
        "label": "match",
        **change,
    }

    response = Client().post("/ext/mturk/pet-match/", form)

    assert response.status_code == status
    assert text in response.content.decode()
    assert not CrowdAssignment.objects.exists()


def test_a_rejected_worker_is_told_to_return_the_hit(
    hit: tuple[CrowdBatch, str],
) -> None:
    batch, hit_id = hit
    Labeller.objects.create(
        project=batch.project, platform="mturk", worker_id="W1", status="rejected"
    )

    response = framed(Client(), hit_id)

    assert response.status_code == 403 and "return the HIT" in response.content.decode()


def study(client: Client, batch: CrowdBatch, pid: str = "P1", **extra: Any) -> Any:
    params = {"PROLIFIC_PID": pid, "STUDY_ID": "ST1", "SESSION_ID": f"S-{pid}"}
    url = f"/ext/link/pet-match/{batch.token}/"
    if extra:
        return client.post(url, {**params, **extra})
    return client.get(url, params)


def test_a_study_worker_labels_every_item_then_gets_the_completion_code(
    make_queued: Callable[..., Project],
) -> None:
    batch = published(make_queued(2), "prolific")
    client = Client()

    first = study(client, batch).content.decode()
    task = batch.tasks.order_by("id")[0]
    answered = study(client, batch, task=task.pk, label="match", duration_ms="900")
    second = study(client, batch).content.decode()
    study(client, batch, task=batch.tasks.order_by("id")[1].pk, label="no_match")
    done = study(client, batch).content.decode()

    assert "item 0" in first and answered.status_code == 302
    assert "item 1" in second and "item 0" not in second
    assert batch.completion_code in done and "app.prolific.com" in done
    labeller = Labeller.objects.get(platform="prolific", worker_id="P1")
    assert labeller.labels.count() == 2
    batch.refresh_from_db()
    assert batch.remote_id == "ST1"


def test_a_study_link_without_ids_or_after_the_end_does_not_take_work(
    make_queued: Callable[..., Project],
) -> None:
    batch = published(make_queued(1), "prolific", size=1, assignments=1)
    client = Client()

    assert client.get(f"/ext/link/pet-match/{batch.token}/").status_code == 400
    assert client.get("/ext/link/pet-match/not-a-token/", {"PROLIFIC_PID": "P"}).status_code == 404
    never = study(client, batch, "P9").content.decode()
    assert "item 0" in never and batch.completion_code not in never
    services.crowd_batch_close(batch=batch)
    ended = study(client, batch, "P2")
    assert ended.status_code == 410 and batch.completion_code not in ended.content.decode()


def test_no_completion_code_without_work(make_queued: Callable[..., Project]) -> None:
    batch = published(make_queued(1), "prolific", size=1, assignments=1)
    study(Client(), batch, "P1", task=batch.tasks.get().pk, label="match")

    page = study(Client(), batch, "P2").content.decode()

    assert "No items are left" in page and batch.completion_code not in page


def engineer(project: Project) -> Client:
    labeller_create(project=project, username="erin", role=Role.ENGINEER)
    client = Client()
    client.force_login(get_user_model().objects.get(username="erin"))
    return client


def test_the_engineer_estimates_then_publishes_a_batch(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(5)
    client = engineer(project)
    fields = {"platform": "mturk", "size": "4", "reward": "0.10", "assignments": "3"}

    estimate = client.post("/projects/pet-match/crowd/", {**fields, "action": "estimate"})
    assert "$1.44" in estimate.content.decode() and not CrowdBatch.objects.exists()

    client.post("/projects/pet-match/crowd/", {**fields, "action": "publish", "total": "9.99"})
    stale = client.get("/projects/pet-match/crowd/").content.decode()
    assert "the cost is now $1.44" in stale and not CrowdBatch.objects.exists()
    client.post("/projects/pet-match/crowd/", {**fields, "action": "publish", "total": "1.44"})
    page = client.get("/projects/pet-match/crowd/").content.decode()

    batch = CrowdBatch.objects.get()
    assert (
        batch.status == "open" and str(batch.cost_estimate) == "1.44" and len(fake_mturk.hits) == 4
    )
    assert f"Batch {batch.pk} published: 4 items on mturk" in page


def test_the_engineer_sees_the_balance_and_amazons_refusals(
    fake_mturk: FakeMTurk, make_queued: Callable[..., Project]
) -> None:
    project = make_queued(2)
    client = engineer(project)
    client.post("/projects/pet-match/crowd/", {"action": "balance", "platform": "mturk"})
    balance = client.get("/projects/pet-match/crowd/").content.decode()
    fake_mturk.failures["create_hit_type"] = [
        request_error("CreateHITType", "Your account is not allowed to create HITs")
    ]
    fields = {"platform": "mturk", "size": "2", "reward": "0.10", "assignments": "3"}
    client.post("/projects/pet-match/crowd/", {**fields, "action": "publish", "total": "0.72"})
    refused = client.get("/projects/pet-match/crowd/").content.decode()

    assert "balance available: $250.00" in balance
    assert "Mechanical Turk refused create_hit_type: Your account is not allowed" in refused
    assert CrowdBatch.objects.get().status == "failed" and "Publish again" in refused


def test_the_engineer_marks_link_decisions_as_done(make_queued: Callable[..., Project]) -> None:
    project = make_queued(1)
    batch = published(project, "prolific", size=1, assignments=1)
    study(Client(), batch, "P1", task=batch.tasks.get().pk, label="match")
    client = engineer(project)
    client.post("/projects/pet-match/crowd/", {"action": "sync", "batch": batch.pk})
    pending = client.get("/projects/pet-match/crowd/").content.decode()
    assignment = CrowdAssignment.objects.get()

    client.post("/projects/pet-match/crowd/", {"action": "applied", "assignment": assignment.pk})

    assert "apply on prolific" in pending and "Study link" in pending
    assert f"/ext/link/pet-match/{batch.token}/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}" in pending
    assignment.refresh_from_db()
    assert assignment.status == "approved"


def test_crowd_labellers_cannot_see_the_outside_crowds_page(
    project: Project, client_for: Callable[..., Any]
) -> None:
    labeller_create(project=project, username="cora", role=Role.CROWD)
    client = Client()
    client.force_login(get_user_model().objects.get(username="cora"))

    assert client.get("/projects/pet-match/crowd/").status_code == 403
    assert client.post("/projects/pet-match/crowd/", {"action": "balance"}).status_code == 403
    assert Client().get("/projects/pet-match/crowd/").status_code == 302


def test_the_dashboard_links_to_outside_crowds(make_queued: Callable[..., Project]) -> None:
    project = make_queued(1)
    page = engineer(project).get("/projects/pet-match/").content.decode()

    assert 'href="/projects/pet-match/crowd/"' in page and "0 open of 0 batches" in page


def test_digits_that_are_not_ascii_are_refused_without_an_error_page(
    make_queued: Callable[..., Project],
) -> None:
    batch = published(make_queued(1), "prolific")
    task = batch.tasks.get()

    for extra in ({"task": task.pk, "duration_ms": "²"}, {"task": "²"}):
        response = study(Client(), batch, label="match", **extra)
        assert response.status_code < 500
