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
from labelling.api import loop
from labelling.models import Item, Label, Labeller, Lease, Project, QueueEntry
from labelling.services.labellers import labeller_create
from labelling.services.leasing import label_submit, lease_next
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


def superuser_client() -> tuple[User, APIClient]:
    """A superuser (no labeller record yet) and a client carrying their API token."""
    admin = User.objects.create_superuser("root", password="x")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=admin).key}")
    return admin, client


def test_a_superuser_token_labels_under_a_record_of_their_own(project: Project) -> None:
    queued_project(project)
    admin, client = superuser_client()
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
    # A prepared statement is logged without its text (psycopg keeps none of it for Django).
    sent = [q["sql"] or "(prepared)" for q in captured.captured_queries]
    return result, [sql for sql in sent if "SAVEPOINT" not in sql]


def needs_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs PostgreSQL: the one-statement lease and answer are PostgreSQL's")


def test_on_postgresql_a_cycle_takes_two_statements_to_lease_and_one_to_answer(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    needs_postgresql()
    queued_project(project, overlap=(2, 2))
    crowd = [client_for(project, name, Role.CROWD) for name in ("first", "second", "third")]
    loop._HOLDERS.clear()
    # The token, user, membership and the checks before a lease; taking the entry.
    response, sent = statements(lambda: crowd[0].get(NEXT))
    assert len(sent) == 2, sent
    # The first answer of a token this process has not seen reads its user for the throttle.
    response, sent = statements(lambda: answer(crowd[0], response.json()["lease"]))
    assert response.status_code == 201
    assert len(sent) == 2, sent
    # Then one statement stores the label, closes the lease and counts the answer.
    lease = crowd[0].get(NEXT).json()["lease"]
    response, sent = statements(lambda: answer(crowd[0], lease))
    assert response.status_code == 201
    assert len(sent) == 1, sent
    # An answer that completes its item's overlap runs the overlap rule in the same statement.
    lease = crowd[1].get(NEXT).json()["lease"]
    assert answer(crowd[1], lease).status_code == 201
    assert Item.objects.get(external_id="i0").state == Item.State.APPROVED
    assert Item.objects.get(external_id="i0").decided_at is not None
    assert QueueEntry.objects.get(item__external_id="i0").labels_count == 2
    assert not QueueEntry.objects.get(item__external_id="i0").collecting
    lease = crowd[2].get(NEXT).json()["lease"]
    answer(crowd[2], lease)
    lease = crowd[1].get(NEXT).json()["lease"]
    response, sent = statements(lambda: answer(crowd[1], lease))
    assert response.status_code == 201
    assert len(sent) == 1, sent
    assert Item.objects.get(external_id="i1").state == Item.State.APPROVED


def test_on_postgresql_the_loops_statements_are_prepared_unless_turned_off(
    project: Project, crowd_api: APIClient, settings: Any
) -> None:
    needs_postgresql()
    queued_project(project, n=12)

    def runs_of_prepared(*fragments: str) -> int:
        """How many times the connection ran prepared statements holding these fragments."""
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT statement, generic_plans + custom_plans FROM pg_prepared_statements"
            )
            found = cursor.fetchall()
        return sum(n for sql, n in found if any(f in sql for f in fragments))

    hot = ("FOR UPDATE OF q SKIP LOCKED", "INSERT INTO labelling_label")
    settings.PREPARED_STATEMENTS = False
    before = runs_of_prepared(*hot)
    assert answer(crowd_api, crowd_api.get(NEXT).json()["lease"]).status_code == 201
    assert runs_of_prepared(*hot) == before
    settings.PREPARED_STATEMENTS = True
    assert answer(crowd_api, crowd_api.get(NEXT).json()["lease"]).status_code == 201
    assert runs_of_prepared(hot[0]) > 0 and runs_of_prepared(hot[1]) > 0
    assert runs_of_prepared(*hot) == before + 2
    assert Label.objects.filter(state="valid").count() == 2


@pytest.mark.parametrize("change", ["token deleted", "user deactivated"])
def test_a_token_no_longer_valid_stores_nothing_though_the_process_has_seen_it(
    project: Project, crowd_api: APIClient, change: str
) -> None:
    queued_project(project)
    assert answer(crowd_api, crowd_api.get(NEXT).json()["lease"]).status_code == 201
    lease = crowd_api.get(NEXT).json()["lease"]
    holder = Lease.objects.get(pk=lease).labeller.user
    if change == "token deleted":
        Token.objects.filter(user=holder).delete()
    else:
        User.objects.filter(pk=holder.pk).update(is_active=False)
    response = answer(crowd_api, lease)
    assert response.status_code == 401, response.content
    assert Label.objects.count() == 1
    assert Lease.objects.get(pk=lease).state == Lease.State.OPEN


def test_a_label_not_in_the_project_is_refused_by_name_through_the_fast_lane(
    project: Project, crowd_api: APIClient
) -> None:
    queued_project(project)
    lease = crowd_api.get(NEXT).json()["lease"]
    response = answer(crowd_api, lease, label="maybe")
    assert response.status_code == 400
    assert "'maybe' is not one of the project's labels" in response.content.decode()
    assert not Label.objects.exists()
    assert Lease.objects.get(pk=lease).state == Lease.State.OPEN


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


# (overlap min, max), the answers to the most urgent item in turn, and what becomes of it at the
# project's target confidence of 0.7: agreement 2/3 and 2/4 ask for one more label, 3/4 approves,
# 3/5 at the maximum escalates.
OVERLAP_RULE_CASES = [
    ((3, 5), "mmm", "approved", 3),
    ((3, 5), "mmnm", "approved", 4),
    ((3, 5), "mnmnm", "escalated", 5),
    ((2, 2), "mn", "escalated", 2),
    ((2, 4), "nn", "approved", 2),
]


@pytest.mark.parametrize(("overlap", "answers", "outcome", "needed"), OVERLAP_RULE_CASES)
def test_the_one_statement_answer_runs_the_overlap_rule_as_the_full_service_does(
    make_project: Callable[..., Project],
    client_for: Callable[..., APIClient],
    overlap: tuple[int, int],
    answers: str,
    outcome: str,
    needed: int,
) -> None:
    needs_postgresql()
    fast = queued_project(make_project(), n=2, overlap=overlap)
    full = queued_project(make_project(slug="pet-match-full"), n=2, overlap=overlap)
    Project.objects.update(target_confidence=0.7)
    names = {"m": "match", "n": "no_match"}
    traces: dict[str, list[tuple[Any, ...]]] = {"fast": [], "full": []}
    for k, letter in enumerate(answers):
        client = client_for(fast, f"fast{k}", Role.CROWD)
        assert answer(client, client.get(NEXT).json()["lease"], names[letter]).status_code == 201
        labeller, _ = labeller_create(project=full, username=f"full{k}", role=Role.CROWD)
        lease = lease_next(project=full, labeller=labeller)
        assert lease is not None
        label_submit(lease_id=lease.pk, user=labeller.user, value=names[letter], duration_ms=1)
        for name, project in (("fast", fast), ("full", full)):
            entry = QueueEntry.objects.select_related("item").get(
                project=project, item__external_id="i0"
            )
            traces[name].append(
                (entry.labels_count, entry.needed, entry.collecting, entry.item.state,
                 entry.item.decided_at is not None)
            )  # fmt: skip
    assert traces["fast"] == traces["full"]
    labels, wanted, collecting, state, decided = traces["fast"][-1]
    assert (labels, wanted, collecting, state) == (len(answers), needed, False, outcome)
    assert decided == (outcome == "approved")


def test_an_answer_whose_counts_disagree_with_the_labels_takes_the_full_service(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    """The one statement decides only from the labels its entry counts; when the counts differ
    (as when another answer commits while it runs), the full service decides."""
    needs_postgresql()
    queued_project(project, n=1, overlap=(2, 2))
    first, second = (client_for(project, name, Role.CROWD) for name in ("first", "second"))
    assert answer(first, first.get(NEXT).json()["lease"]).status_code == 201
    lease = second.get(NEXT).json()["lease"]
    answer(second, 10**9)  # the token's first request reads its user; not counted below
    QueueEntry.objects.update(labels_count=0, needed=1)  # one label fewer than stored
    response, sent = statements(lambda: answer(second, lease))
    assert response.status_code == 201
    assert len(sent) > 1, sent
    entry = QueueEntry.objects.select_related("item").get()
    assert (entry.labels_count, entry.collecting, entry.item.state) == (1, False, "approved")
