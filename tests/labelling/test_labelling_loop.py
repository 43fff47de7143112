"""The labelling loop's fast lane: token requests answered outside DRF give the documented API's
answers; everything it does not handle reaches the documented view."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from core.permissions import Role
from labelling.models import Label, Labeller, Lease, Project
from tests.labelling.test_leasing import answer, queued_project

pytestmark = pytest.mark.django_db
NEXT = "/api/v1/projects/pet-match/tasks/next"


@pytest.fixture(autouse=True)
def no_gold_warm_up(settings: Any) -> None:
    settings.NEW_LABELLER_GOLD = 0


def session_client(client_for: Callable[..., APIClient], project: Project, name: str) -> APIClient:
    """A labeller logged in with a session, as the labelling page is (no token header)."""
    client_for(project, name, Role.CROWD)
    client = APIClient()
    client.force_login(User.objects.get(username=name))
    return client


def test_token_and_session_labellers_get_a_task_of_the_same_shape(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project)
    by_token = client_for(project, "token-worker", Role.CROWD).get(NEXT)
    by_session = session_client(client_for, project, "session-worker").get(NEXT)
    assert by_token.status_code == by_session.status_code == 200
    assert by_token["Content-Type"] == by_session["Content-Type"] == "application/json"
    token_task, session_task = by_token.json(), by_session.json()
    assert token_task.keys() == session_task.keys()
    assert token_task["item"].keys() == session_task["item"].keys()
    assert token_task["item"]["external_id"] == session_task["item"]["external_id"] == "i0"


def test_answers_keep_their_source_on_both_paths(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project)
    for client in (
        client_for(project, "token-worker", Role.CROWD),
        session_client(client_for, project, "session-worker"),
    ):
        lease = client.get(NEXT).json()["lease"]
        response = answer(client, lease, duration_ms=1200)
        assert response.status_code == 201, response.content
        assert set(response.json()) == {"id", "lease", "label", "duration_ms", "created_at"}
    sources = dict(Label.objects.values_list("labeller__user__username", "source"))
    assert sources == {"token-worker": "api", "session-worker": "web"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"label": "match", "duration_ms": "soon"}, "duration_ms"),
        ({"label": "match", "duration_ms": -1}, "duration_ms"),
        ({"label": ""}, "label"),
        ({"label": "x" * 101}, "label"),
        ({}, "label"),
    ],
)
def test_a_malformed_answer_gets_the_documented_error_and_stores_nothing(
    project: Project, crowd_api: APIClient, body: dict[str, Any], field: str
) -> None:
    queued_project(project)
    lease = crowd_api.get(NEXT).json()["lease"]
    response = crowd_api.post(f"/api/v1/leases/{lease}/label", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.content.decode()
    assert not Label.objects.exists()
    assert Lease.objects.get(pk=lease).state == Lease.State.OPEN


def test_a_body_that_is_not_json_is_refused_by_name(project: Project, crowd_api: APIClient) -> None:
    queued_project(project)
    lease = crowd_api.get(NEXT).json()["lease"]
    response = crowd_api.post(
        f"/api/v1/leases/{lease}/label", b"{label", content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]
    assert not Label.objects.exists()


def test_an_unknown_token_is_told_so(project: Project) -> None:
    queued_project(project)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    response = client.get(NEXT)
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid token."
    assert answer(client, 1).status_code == 401


def test_a_domain_error_has_the_same_body_on_both_paths(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project)
    token_client = client_for(project, "token-worker", Role.CROWD)
    session = session_client(client_for, project, "session-worker")
    Labeller.objects.filter(project=project).update(status=Labeller.Status.PAUSED)
    by_token, by_session = token_client.get(NEXT), session.get(NEXT)
    assert by_token.status_code == by_session.status_code == 409
    assert by_token.json() == by_session.json()
    assert by_token.json()["code"] == "conflict"


def test_a_labeller_of_another_project_or_a_blocked_one_finds_no_project(
    project: Project, make_project: Callable[..., Project], client_for: Callable[..., APIClient]
) -> None:
    queued_project(project)
    other = make_project(slug="other")
    outsider = client_for(other, "outsider", Role.CROWD)
    blocked = client_for(project, "blocked", Role.CROWD)
    Labeller.objects.filter(user__username="blocked").update(status=Labeller.Status.BLOCKED)
    for client in (outsider, blocked):
        response = client.get(NEXT)
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"
    assert not Lease.objects.exists()


def test_someone_elses_lease_is_not_found_through_the_fast_lane(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project)
    holder, other = (client_for(project, name, Role.CROWD) for name in ("holder", "other"))
    lease = holder.get(NEXT).json()["lease"]
    response = answer(other, lease)
    assert response.status_code == 404
    assert not Label.objects.exists()


def test_a_superuser_token_labels_under_a_record_of_their_own(project: Project) -> None:
    queued_project(project)
    admin = User.objects.create_superuser("root", password="x")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin).key}")
    lease = client.get(NEXT).json()["lease"]
    assert answer(client, lease).status_code == 201
    assert Labeller.objects.get(user=admin).role == Role.ENGINEER


def test_the_schema_still_documents_the_two_endpoints(engineer_api: APIClient) -> None:
    schema = engineer_api.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operations = {
        operation["operationId"]
        for path in schema["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    assert {"task_next", "lease_label"} <= operations


def statements(run: Callable[[], Any]) -> tuple[Any, list[str]]:
    """What `run` returns, and the SQL statements it sent (the test's own savepoints aside)."""
    with CaptureQueriesContext(connection) as captured:
        result = run()
    sent = [q["sql"] for q in captured.captured_queries]
    return result, [sql for sql in sent if "SAVEPOINT" not in sql]


def test_on_postgresql_a_cycle_takes_three_statements_to_lease_and_three_to_answer(
    project: Project, crowd_api: APIClient
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: the one-statement lease and answer are PostgreSQL's")
    queued_project(project)
    # The token, user and membership; the checks before a lease; taking the entry.
    response, sent = statements(lambda: crowd_api.get(NEXT))
    assert len(sent) == 3, sent
    # The token's user; the lease, locked; the label, the lease closed and the answer counted.
    response, sent = statements(lambda: answer(crowd_api, response.json()["lease"]))
    assert response.status_code == 201
    assert len(sent) == 3, sent


def test_the_fast_bodies_are_the_documented_serializers_output(
    project: Project, crowd_api: APIClient
) -> None:
    from labelling.api.serializers import LabelOutput, TaskOutput, label_body, task_body

    queued_project(project)
    project.instructions = "Say **match** when they match; é ü 🐈"
    project.save()
    lease_id = crowd_api.get(NEXT).json()["lease"]
    assert answer(crowd_api, lease_id, duration_ms=None).status_code == 201
    lease = Lease.objects.select_related("item", "project").get(pk=lease_id)
    label = Label.objects.get(lease=lease)
    assert task_body(lease) == TaskOutput(lease).data
    assert label_body(label) == LabelOutput(label).data
    label.duration_ms = 1840
    assert label_body(label) == LabelOutput(label).data
