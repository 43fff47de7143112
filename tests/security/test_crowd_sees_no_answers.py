"""Gold answers, consensus, the model's prediction and other labellers' labels never reach a crowd
labeller (or an outside worker, or anyone not logged in): every route of the access tables is
walked as each of them, then a labelling session goes through gold items, disputed items and
items others labelled; no response holds any of it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from django.test import Client
from rest_framework.test import APIClient

from labelling.models import Consensus, Item, Label, Lease
from tests.security.test_access_matrix import API, PAGES, body_for, call, fill
from tests.security.world import (
    SECRET_LABELLERS,
    SECRET_NOTE,
    SECRET_PROBABILITY,
    SECRET_PROBLEM,
    World,
)

CROWD_SIDE = ("anonymous", "crowd", "crowd_other")
# Every key a crowd labeller may ever receive in JSON: a task (lease, item, labels,
# instructions, expires_at), their own answer (id, lease, label, duration_ms, created_at), a
# lease's state, errors, and the public health check (whether the services answer).
CROWD_KEYS = {
    "lease", "item", "external_id", "payload", "labels", "instructions", "expires_at",
    "id", "label", "duration_ms", "created_at", "state",
    "detail", "code", "errors", "total_errors", "line", "field", "reason",
    "status", "database", "redis",
}  # fmt: skip
# Words of the engineer's and expert's screens and data that a crowd page never holds.
TELLING_WORDS = ("gold", "consensus", "posterior", "confidence", "agreement", "probabilit",
                 "reliability", "accuracy", "escalat")  # fmt: skip


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every key of a JSON document, payloads left out (they are the item)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            yield f"{path}.{key}", key
            if key != "payload":
                yield from walk(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for inner in value:
            yield from walk(inner, f"{path}[]")


def assert_holds_no_secret(world: World, body: bytes) -> None:
    """None of the world's secret values is in the response."""
    text = body.decode()
    for secret in world.a.secrets + world.b.secrets:
        assert secret not in text, f"{secret!r} reached the crowd"


def assert_tells_nothing(world: World, body: bytes, own_answers: set[str] = frozenset()) -> None:
    """Neither the JSON keys nor the text of a response hold what the crowd must not see."""
    assert_holds_no_secret(world, body)
    text = body.decode()
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        lowered = text.lower()
        for word in TELLING_WORDS:
            assert word not in lowered, f"{word!r} is on a crowd page"
        return
    for path, key in walk(document):
        assert key in CROWD_KEYS, f"{path} reached the crowd"
    if isinstance(document, dict) and "label" in document:
        assert document["label"] in own_answers, "a label that is not the labeller's own"


def all_rows() -> Iterator[Any]:
    for api, table in ((True, API), (False, PAGES)):
        for method, template, *_ in table:
            for role in CROWD_SIDE:
                yield pytest.param(api, method, template, role, id=f"{method} {template} {role}")


@pytest.mark.parametrize(("api", "method", "template", "role"), list(all_rows()))
def test_no_route_tells_the_crowd_an_answer(
    world: World, api_as: Callable[[str], APIClient], browser_as: Callable[[str], Client],
    api: bool, method: str, template: str, role: str,
) -> None:  # fmt: skip
    client = api_as(role) if api else browser_as(role)
    body = body_for(method, template, world)
    response = call(client, method, fill(template, world), body, api=api)

    if template.startswith(("/api/schema", "/api/docs")):
        # The API's description names every field of every role; it holds no value of any.
        assert_holds_no_secret(world, response.content)
        return
    own = {body["label"]} if isinstance(body, dict) and "label" in body else set()
    assert_tells_nothing(world, response.content, own)


def crowd_session(world: World, client: APIClient, rounds: int) -> list[dict[str, Any]]:
    """Take items one after another, answer, undo, answer differently, skip every third."""
    tasks = []
    for n in range(rounds):
        response = client.get(f"/api/v1/projects/{world.a.slug}/tasks/next")
        if response.status_code == 204:
            break
        assert response.status_code == 200
        assert_tells_nothing(world, response.content)
        task = response.json()
        tasks.append(task)
        lease = task["lease"]
        if n % 3 == 2:
            assert_tells_nothing(world, client.post(f"/api/v1/leases/{lease}/skip").content)
            continue
        answered = client.post(f"/api/v1/leases/{lease}/label", {"label": "match"}, format="json")
        assert_tells_nothing(world, answered.content, {"match"})
        undone = client.post(f"/api/v1/leases/{lease}/undo")
        assert_tells_nothing(world, undone.content)
        again = client.post(f"/api/v1/leases/{lease}/label", {"label": "no_match"}, format="json")
        assert_tells_nothing(world, again.content, {"no_match"})
        assert_tells_nothing(world, client.post(f"/api/v1/leases/{lease}/heartbeat").content)
    return tasks


def test_a_labelling_session_through_gold_and_labelled_items_tells_nothing(
    world: World, api_as: Callable[[str], APIClient], browser_as: Callable[[str], Client]
) -> None:
    project = world.a.project
    # Every lease a gold check while the labeller has gold items left to see, so that the session
    # surely goes through them.
    project.gold_rate = 1.0
    project.save(update_fields=["gold_rate"])
    client = api_as("crowd")
    # The lease the crowd labeller holds first, the gold checks, then the items others answered.
    tasks = crowd_session(world, client, rounds=12)
    seen = {task["item"]["external_id"] for task in tasks}

    gold = set(Item.objects.filter(project=project).exclude(gold_label="").values_list(
        "external_id", flat=True))  # fmt: skip
    labelled_by_others = set(
        Label.objects.filter(project=project).exclude(labeller__user__username="cora")
        .values_list("item__external_id", flat=True)
    )  # fmt: skip
    assert seen & gold, "the session went through gold items"
    assert seen & labelled_by_others, "and items other labellers answered"
    assert Lease.objects.filter(labeller__user__username="cora", is_gold=True).exists()
    page = browser_as("crowd").get(f"/label/{world.a.slug}/")
    assert_tells_nothing(world, page.content)


@pytest.mark.parametrize("key", ["hit", "study"])
def test_outside_workers_see_the_item_and_nothing_else(world: World, key: str, db: None) -> None:
    if key == "hit":
        path = (f"/ext/mturk/{world.a.slug}/?hitId={world.a.hit}&assignmentId=A1&workerId=W1"
                "&turkSubmitTo=https://workersandbox.mturk.com")  # fmt: skip
    else:
        path = f"/ext/link/{world.a.slug}/{world.a.study}/?PROLIFIC_PID=P1&SESSION_ID=X1"
    response = Client().get(path)

    assert response.status_code == 200
    assert "text of" in response.content.decode(), "the item is shown"
    assert_tells_nothing(world, response.content)


def test_the_same_values_do_reach_the_experts_and_engineers_who_need_them(
    world: World, api_as: Callable[[str], APIClient], browser_as: Callable[[str], Client]
) -> None:
    """The search above is for values the product really shows: here they are, to others."""
    slug = world.a.slug
    escalations = api_as("expert").get(f"/api/v1/projects/{slug}/escalations").content.decode()
    download = api_as("engineer").get(f"/api/v1/releases/{world.a.release}/download")
    release = b"".join(download.streaming_content).decode()
    problems = browser_as("expert").get(f"/projects/{slug}/problems/").content.decode()
    labellers = browser_as("engineer").get(f"/projects/{slug}/labellers/").content.decode()
    dashboard = browser_as("engineer").get(f"/projects/{slug}/").content.decode()

    assert str(SECRET_PROBABILITY) in escalations and SECRET_NOTE in dashboard
    assert all(name in escalations for name in SECRET_LABELLERS[:2])
    agreed = Consensus.objects.get(item__project=world.a.project, item__external_id="a0")
    assert str(agreed.confidence) in release and str(agreed.confidence) in world.a.secrets
    assert SECRET_PROBLEM in problems and SECRET_LABELLERS[2] in labellers
