"""No object is reachable by guessing its id: leases, releases, escalations, labellers, problems,
jobs, outside-crowd batches and invitations of another project (or another labeller) answer
exactly as an id that does not exist would, with no data in the body."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from labelling.crowd.models import CrowdBatch
from labelling.models import Labeller, LabellerDecision, Problem
from labelling.services.imports import predictions_import
from tests.security.test_access_matrix import API, body_for, fill
from tests.security.world import World

NO_SUCH_ID = 987654

# Routes that name an object by its id, with the body an allowed call would send.
BY_ID = [
    ("POST", "/api/v1/leases/{}/label", "open_lease", {"label": "match"}),
    ("POST", "/api/v1/leases/{}/skip", "open_lease", None),
    ("POST", "/api/v1/leases/{}/heartbeat", "open_lease", None),
    ("POST", "/api/v1/leases/{}/undo", "answered_lease", None),
    ("POST", "/api/v1/labellers/{}/reject", "labeller", {"reason": "x"}),
    ("POST", "/api/v1/labellers/{}/approve", "labeller", {"reason": "x"}),
    ("POST", "/api/v1/labellers/{}/block", "labeller", {"reason": "x"}),
    ("POST", "/api/v1/escalations/{}/resolve", "escalation", {"label": "match", "note": "x"}),
    ("GET", "/api/v1/releases/{}", "release", None),
    ("GET", "/api/v1/releases/{}/download", "release", None),
    ("PATCH", "/api/v1/problems/{}", "problem", {"description": "x"}),
    ("GET", "/api/v1/jobs/{}", "job", None),
]
# Everyone of project B, and everyone of project A but the lease holder for A's own leases.
GUESSERS = ["crowd_other", "engineer_other"]


def send(client: APIClient, method: str, path: str, body: Any) -> Any:
    return getattr(client, method.lower())(path, body, format="json")


@pytest.mark.parametrize("role", GUESSERS)
@pytest.mark.parametrize(("method", "template", "kind", "body"), BY_ID, ids=lambda v: str(v))
def test_another_projects_object_answers_as_one_that_does_not_exist(
    world: World, api_as: Callable[[str], APIClient], role: str, method: str, template: str,
    kind: str, body: Any,
) -> None:  # fmt: skip
    client = api_as(role)
    real = send(client, method, template.format(getattr(world.a, kind)), body)
    missing = send(client, method, template.format(NO_SUCH_ID), body)

    assert real.status_code == missing.status_code == 404
    assert real.json() == missing.json(), "the answer must not tell that the object exists"
    assert set(real.json()) == {"detail", "code"}


@pytest.mark.parametrize(("method", "template", "kind", "body"), BY_ID[:4], ids=lambda v: str(v))
@pytest.mark.parametrize("role", ["expert", "engineer"])
def test_a_lease_is_its_holders_alone_even_in_the_same_project(
    world: World, api_as: Callable[[str], APIClient], role: str, method: str, template: str,
    kind: str, body: Any,
) -> None:  # fmt: skip
    client = api_as(role)
    real = send(client, method, template.format(getattr(world.a, kind)), body)
    missing = send(client, method, template.format(NO_SUCH_ID), body)

    assert (real.status_code, real.json()) == (missing.status_code, missing.json())
    assert real.status_code == 404


@pytest.mark.parametrize(("method", "template", "kind", "body"), BY_ID, ids=lambda v: str(v))
def test_project_as_people_cannot_reach_project_bs_objects_either(
    world: World, api_as: Callable[[str], APIClient], method: str, template: str, kind: str,
    body: Any,
) -> None:  # fmt: skip
    for role in ("crowd", "expert", "engineer"):
        response = send(api_as(role), method, template.format(getattr(world.b, kind)), body)
        assert response.status_code == 404, (role, response.content)
        assert not any(secret in response.content.decode() for secret in world.b.secrets)


def test_a_labeller_of_another_project_has_no_page_under_this_projects_address(
    world: World, browser_as: Callable[[str], Client]
) -> None:
    engineer = browser_as("engineer")
    other = engineer.get(f"/projects/{world.a.slug}/labellers/{world.b.labeller}/")
    missing = engineer.get(f"/projects/{world.a.slug}/labellers/{NO_SUCH_ID}/")

    assert other.status_code == missing.status_code == 404
    assert "secret-worker" not in other.content.decode()


def test_an_engineer_cannot_decide_about_another_projects_labeller_from_their_own_page(
    world: World, browser_as: Callable[[str], Client]
) -> None:
    engineer = browser_as("engineer")
    for action in ("reject", "block", "approve"):
        response = engineer.post(
            f"/projects/{world.a.slug}/labellers/",
            {"labeller": world.b.labeller, "action": action},
            follow=True,
        )
        assert "Nothing decided: choose a labeller of this project" in response.content.decode()
    labeller = Labeller.objects.get(pk=world.b.labeller)
    assert labeller.status == Labeller.Status.ACTIVE
    assert not LabellerDecision.objects.filter(labeller=labeller).exists()


def test_another_projects_problem_is_not_shown_on_this_projects_problems_page(
    world: World, browser_as: Callable[[str], Client]
) -> None:
    engineer = browser_as("engineer")
    page = engineer.get(f"/projects/{world.a.slug}/problems/?problem={world.b.problem}")
    changed = engineer.post(
        f"/projects/{world.a.slug}/problems/",
        {"action": "update", "problem": world.b.problem, "name": "renamed", "harm": 1},
        follow=True,
    )

    assert page.status_code == 200
    assert Problem.objects.get(pk=world.b.problem).name not in page.content.decode()
    assert "problem not found" in changed.content.decode()
    assert Problem.objects.get(pk=world.b.problem).name != "renamed"


def test_another_projects_outside_crowd_batch_cannot_be_acted_on(
    world: World, browser_as: Callable[[str], Client]
) -> None:
    engineer = browser_as("engineer")
    before = CrowdBatch.objects.get(pk=world.b.batch).status
    for action in ("sync", "close", "retry"):
        response = engineer.post(
            f"/projects/{world.a.slug}/crowd/", {"action": action, "batch": world.b.batch},
            follow=True,
        )  # fmt: skip
        assert "choose a batch of this project" in response.content.decode()
    assert CrowdBatch.objects.get(pk=world.b.batch).status == before


def test_a_problem_cannot_take_another_projects_items_as_its_patterns(
    world: World, api_as: Callable[[str], APIClient]
) -> None:
    row = {"external_id": "only-in-a", "payload": {"text": "x"}, "model_version": "m1",
           "probabilities": {"match": 0.5, "no_match": 0.5}}  # fmt: skip
    predictions_import(
        project=world.a.project, stream=io.BytesIO(json.dumps(row).encode()), fmt="jsonl"
    )

    response = api_as("engineer_other").post(
        f"/api/v1/projects/{world.b.slug}/problems",
        {"name": "borrowed", "items": ["only-in-a"]},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["errors"] == [
        {"line": None, "field": "items", "reason": "no item 'only-in-a' in the project"}
    ]
    assert not Problem.objects.filter(name="borrowed").exists()


@pytest.mark.parametrize(
    "path",
    [
        "/ext/mturk/{a}/?hitId={b_hit}&assignmentId=A1&workerId=W1"
        "&turkSubmitTo=https://workersandbox.mturk.com",
        "/ext/link/{a}/{b_study}/?PROLIFIC_PID=P1&STUDY_ID=S1&SESSION_ID=X1",
    ],
)
def test_outside_work_of_another_project_is_not_found_under_this_projects_address(
    world: World, path: str
) -> None:
    filled = path.format(a=world.a.slug, b_hit=world.b.hit, b_study=world.b.study)
    response = Client().get(filled)

    assert response.status_code == 404
    page = response.content.decode()
    assert world.b.project.name not in page and "text of" not in page


def test_a_sign_up_link_that_does_not_exist_names_no_project(world: World, db: None) -> None:
    response = Client().get("/join/not-a-real-token/")

    assert response.status_code == 404
    assert world.a.project.name not in response.content.decode()


@pytest.mark.parametrize(
    ("method", "template"), [(m, t) for m, t, *_ in API if "{slug}" in t], ids=lambda v: str(v)
)
def test_a_project_one_has_no_role_in_answers_as_one_that_does_not_exist(
    world: World, api_as: Callable[[str], APIClient], method: str, template: str
) -> None:
    client = api_as("engineer_other")
    body = body_for(method, template, world)
    real = send(client, method, fill(template, world), body)
    missing = send(client, method, fill(template, world).replace(world.a.slug, "no-such"), body)

    assert real.status_code == missing.status_code == 404
    assert real.json() == missing.json()
