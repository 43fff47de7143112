"""An answer that asks for the next item (`"next": true`): the label is stored as by a plain
answer, and the response carries what tasks/next would have given, on the token's fast lane and
on the session's DRF view alike."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError
from django.utils import timezone
from rest_framework.test import APIClient

from core.exceptions import Conflict
from core.permissions import LABELLERS, Role
from labelling.api import loop, views
from labelling.models import Label, Labeller, Lease, Project
from labelling.services.gold import gold_import
from labelling.services.labellers import labeller_create
from labelling.services.leasing import _take_entry, lease_next_as_read
from tests.labelling.test_labelling_loop import (
    NEXT,
    needs_postgresql,
    session_client,
    statements,
    superuser_client,
)
from tests.labelling.test_leasing import answer, queued_project

pytestmark = pytest.mark.django_db
LABEL_KEYS = {"id", "lease", "label", "duration_ms", "created_at"}


@pytest.fixture(autouse=True)
def no_gold_warm_up(settings: Any) -> None:
    settings.NEW_LABELLER_GOLD = 0


def both_paths(client_for: Callable[..., APIClient], project: Project) -> list[APIClient]:
    """A labeller with a token (the fast lane) and one with a session (the DRF view)."""
    return [
        client_for(project, "token-worker", Role.CROWD),
        session_client(client_for, project, "session-worker"),
    ]


def test_the_answer_brings_the_next_task_as_tasks_next_gives_it(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project, n=2, overlap=(2, 2))
    for client in both_paths(client_for, project):
        first = client.get(NEXT).json()
        response = answer(client, first["lease"], duration_ms=900, next=True)
        assert response.status_code == 201, response.content
        body = response.json()
        assert set(body) == LABEL_KEYS | {"next"}
        assert body["lease"] == first["lease"] and body["label"] == "match"
        task = body["next"]
        assert task.keys() == first.keys() and task["item"].keys() == first["item"].keys()
        assert task["item"]["external_id"] != first["item"]["external_id"]
        assert Lease.objects.get(pk=task["lease"]).state == Lease.State.OPEN
        # The lease is theirs: tasks/next gives the same one back.
        assert client.get(NEXT).json() == task
        assert Label.objects.get(lease_id=first["lease"]).duration_ms == 900


def test_nothing_left_is_a_null_next_and_the_answer_is_stored(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project, n=1, overlap=(2, 2))
    for client in both_paths(client_for, project):
        lease = client.get(NEXT).json()["lease"]
        response = answer(client, lease, next=True)
        assert response.status_code == 201, response.content
        assert response.json()["next"] is None
        assert "next_error" not in response.json()
        assert client.get(NEXT).status_code == 204
    assert Label.objects.count() == 2


def test_repeating_the_call_returns_the_same_answer_and_the_same_next_task(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project, n=3)
    for client in both_paths(client_for, project):
        lease = client.get(NEXT).json()["lease"]
        first = answer(client, lease, next=True).json()
        again = answer(client, lease, next=True)
        assert again.status_code == 201
        assert again.json()["id"] == first["id"]
        assert again.json()["next"]["lease"] == first["next"]["lease"]
    assert Label.objects.count() == 2
    assert Lease.objects.filter(state=Lease.State.OPEN).count() == 2


def test_without_next_the_body_is_the_answer_alone(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project, n=3)
    for client in both_paths(client_for, project):
        lease = client.get(NEXT).json()["lease"]
        response = answer(client, lease, next=False)
        assert response.status_code == 201
        assert set(response.json()) == LABEL_KEYS
    assert not Lease.objects.filter(state=Lease.State.OPEN).exists()


def test_a_labeller_paused_meanwhile_gets_their_answer_stored_and_tasks_nexts_error(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project, n=3)
    clients = both_paths(client_for, project)
    leases = [client.get(NEXT).json()["lease"] for client in clients]
    Labeller.objects.filter(project=project).update(status=Labeller.Status.PAUSED)
    bodies = []
    for client, lease in zip(clients, leases, strict=True):
        response = answer(client, lease, next=True)
        assert response.status_code == 201, response.content
        body = response.json()
        assert body["next"] is None
        refused = client.get(NEXT)
        assert body["next_error"] == {"status": refused.status_code, **refused.json()}
        bodies.append(body["next_error"])
    assert bodies[0] == bodies[1] and bodies[0]["status"] == 409
    assert Label.objects.count() == 2
    assert not Lease.objects.filter(state=Lease.State.OPEN).exists()


@pytest.mark.parametrize("value", ["maybe", 2, None, [True]])
def test_a_next_that_is_not_true_or_false_is_refused_by_name_and_stores_nothing(
    project: Project, crowd_api: APIClient, value: Any
) -> None:
    queued_project(project)
    lease = crowd_api.get(NEXT).json()["lease"]
    response = answer(crowd_api, lease, next=value)
    assert response.status_code == 400, response.content
    assert "next" in response.json()["errors"][0]["field"]
    assert not Label.objects.exists()
    assert Lease.objects.get(pk=lease).state == Lease.State.OPEN


def test_a_superuser_token_gets_the_next_task_too(project: Project) -> None:
    queued_project(project)
    admin, client = superuser_client()
    lease = client.get(NEXT).json()["lease"]
    response = answer(client, lease, next=True)
    assert response.status_code == 201, response.content
    assert response.json()["next"]["lease"] != lease
    assert Lease.objects.get(pk=response.json()["next"]["lease"]).labeller.user == admin


def test_on_postgresql_an_answer_with_the_next_task_takes_two_statements(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    needs_postgresql()
    queued_project(project, n=3)
    crowd = client_for(project, "worker", Role.CROWD)
    lease = crowd.get(NEXT).json()["lease"]
    loop._HOLDERS.clear()
    answer(crowd, lease, next=True)  # the throttle's first read of the token's user
    lease = crowd.get(NEXT).json()["lease"]
    # The answer with the member and the checks before their lease; taking the entry.
    response, sent = statements(lambda: answer(crowd, lease, next=True))
    assert response.status_code == 201
    assert response.json()["next"] is not None
    assert len(sent) == 2, sent


def test_new_labellers_get_their_gold_checks_first_through_chained_answers(
    project: Project, client_for: Callable[..., APIClient], settings: Any
) -> None:
    settings.NEW_LABELLER_GOLD = 2
    queued_project(project, n=4, overlap=(2, 2))
    gold = b'{"external_id": "i3", "label": "no_match"}\n{"external_id": "i2", "label": "match"}'
    gold_import(project=project, stream=io.BytesIO(gold), fmt="jsonl")
    for client in both_paths(client_for, project):
        task, seen = client.get(NEXT).json(), []
        while task is not None:
            assert "gold" not in json.dumps(task).lower()
            seen.append(task["item"]["external_id"])
            task = answer(client, task["lease"], next=True).json()["next"]
        assert sorted(seen[:2]) == ["i2", "i3"] and sorted(seen[2:]) == ["i0", "i1"]
    assert Lease.objects.filter(is_gold=True).count() == 4


def test_a_chained_answer_gives_back_the_projects_expired_leases_first(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project, n=2, overlap=(1, 1))
    slow, quick = (client_for(project, name, Role.CROWD) for name in ("slow", "quick"))
    held = slow.get(NEXT).json()
    lease = quick.get(NEXT).json()["lease"]
    Lease.objects.filter(pk=held["lease"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    task = answer(quick, lease, next=True).json()["next"]
    assert task["item"]["external_id"] == held["item"]["external_id"]
    assert Lease.objects.get(pk=held["lease"]).state == Lease.State.EXPIRED
    assert answer(slow, held["lease"]).status_code == 409


@pytest.mark.parametrize("gold_first", [False, True])
def test_a_labeller_blocked_while_their_answer_waited_gets_no_next_item(
    project: Project, settings: Any, gold_first: bool
) -> None:
    """The answer's statement read the labeller as active; a block committed before the next
    lease: whichever way that lease would go (a gold check, the queue), it is refused."""
    queued_project(project, n=3)
    if gold_first:
        settings.NEW_LABELLER_GOLD = 2
        gold = b'{"external_id": "i2", "label": "match"}'
        gold_import(project=project, stream=io.BytesIO(gold), fmt="jsonl")
    labeller, _ = labeller_create(project=project, username="cora", role=Role.CROWD)
    as_read = Labeller.objects.select_related("project").get(pk=labeller.pk)
    Labeller.objects.filter(pk=labeller.pk).update(status=Labeller.Status.BLOCKED)
    with pytest.raises(Conflict, match="blocked"):
        lease_next_as_read(as_read, (False, 0, None), roles=LABELLERS)
    assert not Lease.objects.exists()


def test_the_take_itself_leases_nothing_to_a_labeller_no_longer_active(project: Project) -> None:
    needs_postgresql()
    queued_project(project, n=3)
    labeller, _ = labeller_create(project=project, username="cora", role=Role.CROWD)
    Labeller.objects.filter(pk=labeller.pk).update(status=Labeller.Status.PAUSED)
    assert _take_entry(project, labeller) is None
    assert not Lease.objects.exists()


def test_a_database_error_while_leasing_the_next_item_keeps_the_answer_and_says_so(
    project: Project, client_for: Callable[..., APIClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    queued_project(project, n=3)

    def lost(*args: Any, **kwargs: Any) -> None:
        raise OperationalError("server closed the connection unexpectedly")

    clients = both_paths(client_for, project)
    leases = [client.get(NEXT).json()["lease"] for client in clients]
    monkeypatch.setattr(loop, "_next_after", lost)
    monkeypatch.setattr(views, "lease_next", lost)
    for client, lease in zip(clients, leases, strict=True):
        response = answer(client, lease, next=True)
        assert response.status_code == 201, response.content
        assert response.json()["next"] is None
        assert response.json()["next_error"]["status"] == 503
        assert "answer was saved" in response.json()["next_error"]["detail"]
        assert Label.objects.filter(lease_id=lease).exists()
