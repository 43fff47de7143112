"""Who may call what: every route of the product × the six people who could call it.

The tables below are the access rules, one row per route and method, one column per person:

- anonymous: nobody logged in, no token;
- crowd / expert / engineer: a crowd labeller, an expert, an engineer of project A (the project
  every path names);
- crowd_other / engineer_other: a crowd labeller and an engineer of project B only.

The rule behind the numbers (core/permissions.py): someone with no role in a project gets 404 for
anything of it (so guessing a slug or an id tells them nothing), a member whose role does not
allow the call gets 403; the API answers 401 to anonymous callers, the pages send them to the
log-in page (302). Leases belong to one labeller: anyone else, even the project's engineer,
gets 404.

Three kinds of route are open to everyone on purpose:

- the OpenAPI schema (/api/schema/) and its browsable docs (/api/docs/) describe the shape of the
  API, which is public in the source anyway, and hold no data of any project; client generators
  and outside checks fetch them without credentials;
- the pages outside crowd workers open (/ext/mturk/…, /ext/link/…): those workers have no Quorum
  account; the platform's ids say who they are, and an unknown HIT or study link is a 404;
- sign-up links (/join/{token}/) and the log-in page.

The admin is Django's, for staff only: every one of its pages sends a non-staff user to its log-in
page (test_every_admin_page_is_for_staff_only).

test_every_route_has_a_row fails when a route is added without a row here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib import admin
from django.http import HttpResponse
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from rest_framework.test import APIClient

from tests.security.world import ROLES, World

# fmt: off
API = [
    # method  path                                                anon crowd c_oth expert eng  e_oth
    ("POST",  "/api/v1/projects/{slug}/predictions",              401, 403,  404,  403,   201, 404),
    ("POST",  "/api/v1/projects/{slug}/queue",                    401, 403,  404,  403,   200, 404),
    ("GET",   "/api/v1/projects/{slug}/tasks/next",               401, 200,  404,  200,   200, 404),
    ("POST",  "/api/v1/leases/{open_lease}/label",                401, 201,  404,  404,   404, 404),
    ("POST",  "/api/v1/leases/{open_lease}/skip",                 401, 200,  404,  404,   404, 404),
    ("POST",  "/api/v1/leases/{open_lease}/heartbeat",            401, 200,  404,  404,   404, 404),
    ("POST",  "/api/v1/leases/{answered_lease}/undo",             401, 200,  404,  404,   404, 404),
    ("POST",  "/api/v1/projects/{slug}/invitations",              401, 403,  404,  403,   201, 404),
    ("POST",  "/api/v1/labellers/{labeller}/reject",              401, 403,  404,  403,   200, 404),
    ("POST",  "/api/v1/labellers/{labeller}/approve",             401, 403,  404,  403,   200, 404),
    ("POST",  "/api/v1/labellers/{labeller}/block",               401, 403,  404,  403,   200, 404),
    ("GET",   "/api/v1/projects/{slug}/escalations",              401, 403,  404,  200,   200, 404),
    ("GET",   "/api/v1/projects/{slug}/escalations/next",         401, 403,  404,  200,   200, 404),
    ("POST",  "/api/v1/escalations/{escalation}/resolve",         401, 403,  404,  200,   200, 404),
    ("GET",   "/api/v1/projects/{slug}/releases",                 401, 403,  404,  403,   200, 404),
    ("POST",  "/api/v1/projects/{slug}/releases",                 401, 403,  404,  403,   202, 404),
    ("GET",   "/api/v1/releases/{release}",                       401, 403,  404,  403,   200, 404),
    ("GET",   "/api/v1/releases/{release}/download",              401, 403,  404,  403,   200, 404),
    ("GET",   "/api/v1/projects/{slug}/problems",                 401, 403,  404,  200,   200, 404),
    ("POST",  "/api/v1/projects/{slug}/problems",                 401, 403,  404,  201,   201, 404),
    ("PATCH", "/api/v1/problems/{problem}",                       401, 403,  404,  200,   200, 404),
    ("PATCH", "/api/v1/projects/{slug}/model-versions/m1",        401, 403,  404,  403,   200, 404),
    ("GET",   "/api/v1/projects/{slug}/model-versions/m1/monitoring", 401, 403, 404, 200, 200, 404),
    ("GET",   "/api/v1/jobs/{job}",                               401, 403,  404,  403,   200, 404),
    # Public on purpose: the API's shape, no project's data (see the module docstring).
    ("GET",   "/api/schema/",                                     200, 200,  200,  200,   200, 200),
    ("GET",   "/api/docs/",                                       200, 200,  200,  200,   200, 200),
    # Public on purpose: for load balancers; it says only whether the services answer.
    ("GET",   "/healthz",                                         200, 200,  200,  200,   200, 200),
]

PAGES = [
    # method  path                                                anon crowd c_oth expert eng  e_oth
    ("GET",   "/",                                                302, 200,  200,  200,   200, 200),
    ("GET",   "/projects/{slug}/",                                302, 403,  404,  403,   200, 404),
    ("GET",   "/projects/{slug}/threshold/",                      302, 403,  404,  403,   200, 404),
    ("POST",  "/projects/{slug}/threshold/",                      302, 403,  404,  403,   302, 404),
    ("GET",   "/projects/{slug}/releases/",                       302, 403,  404,  403,   200, 404),
    ("POST",  "/projects/{slug}/releases/",                       302, 403,  404,  403,   302, 404),
    ("GET",   "/projects/{slug}/problems/",                       302, 403,  404,  200,   200, 404),
    ("POST",  "/projects/{slug}/problems/",                       302, 403,  404,  302,   302, 404),
    ("GET",   "/projects/{slug}/labellers/",                      302, 403,  404,  403,   200, 404),
    ("POST",  "/projects/{slug}/labellers/",                      302, 403,  404,  403,   302, 404),
    ("GET",   "/projects/{slug}/labellers/{labeller}/",           302, 403,  404,  403,   200, 404),
    ("GET",   "/projects/{slug}/crowd/",                          302, 403,  404,  403,   200, 404),
    ("POST",  "/projects/{slug}/crowd/",                          302, 403,  404,  403,   302, 404),
    ("GET",   "/label/{slug}/",                                   302, 200,  404,  200,   200, 404),
    ("GET",   "/review/{slug}/",                                  302, 403,  404,  200,   200, 404),
    # Sign-up links, the log-in page and the outside workers' pages: open to everyone.
    ("GET",   "/join/{invitation}/",                              200, 200,  200,  200,   200, 200),
    ("POST",  "/join/{invitation}/",                              302, 302,  302,  302,   302, 302),
    ("GET",   "/ext/mturk/{slug}/?{hit_query}",                   200, 200,  200,  200,   200, 200),
    ("POST",  "/ext/mturk/{slug}/",                               200, 200,  200,  200,   200, 200),
    ("GET",   "/ext/link/{slug}/{study}/?{study_query}",          200, 200,  200,  200,   200, 200),
    ("POST",  "/ext/link/{slug}/{study}/",                        302, 302,  302,  302,   302, 302),
    ("GET",   "/accounts/login/",                                 200, 200,  200,  200,   200, 200),
    ("POST",  "/accounts/login/",                                 200, 200,  200,  200,   200, 200),
    ("GET",   "/accounts/logout/",                                405, 405,  405,  405,   405, 405),
    ("POST",  "/accounts/logout/",                                302, 302,  302,  302,   302, 302),
    # Django's admin: staff only; nobody here is staff (every admin page: see below).
    ("GET",   "/admin/",                                          302, 302,  302,  302,   302, 302),
]
# fmt: on

HIT = {"assignmentId": "ASG1", "workerId": "W1", "turkSubmitTo": "https://workersandbox.mturk.com"}
STUDY = {"PROLIFIC_PID": "P1", "STUDY_ID": "S1", "SESSION_ID": "X1"}

# Bodies of the calls that send one: valid, so that an allowed call does its work.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/projects/{slug}/predictions"): [
        {"external_id": "new-1", "payload": {"text": "new"}, "model_version": "m1",
         "probabilities": {"match": 0.3, "no_match": 0.7}},
    ],
    ("POST", "/api/v1/leases/{open_lease}/label"): {"label": "match", "duration_ms": 1200},
    ("POST", "/api/v1/labellers/{labeller}/reject"): {"reason": "answers at random"},
    ("POST", "/api/v1/labellers/{labeller}/approve"): {"reason": "looked again"},
    ("POST", "/api/v1/labellers/{labeller}/block"): {"reason": "spam"},
    ("POST", "/api/v1/escalations/{escalation}/resolve"): {"label": "match", "note": "clear"},
    ("POST", "/api/v1/projects/{slug}/problems"): {"name": "misses tabby cats"},
    ("PATCH", "/api/v1/problems/{problem}"): {"description": "seen again"},
    ("PATCH", "/api/v1/projects/{slug}/model-versions/m1"): {"note": "the first model"},
    ("POST", "/projects/{slug}/threshold/"): {"threshold": "0.4", "note": "fewer misses"},
    ("POST", "/projects/{slug}/releases/"): {"format": "jsonl", "override_reason": "small"},
    ("POST", "/projects/{slug}/problems/"): {"action": "create", "name": "misses dogs", "harm": 2},
    ("POST", "/projects/{slug}/labellers/"): {"labeller": "{labeller}", "action": "approve"},
    ("POST", "/projects/{slug}/crowd/"): {"action": "balance", "platform": "prolific"},
    ("POST", "/join/{invitation}/"): {"username": "newcomer", "password": "a-long-passphrase-7"},
    ("POST", "/ext/mturk/{slug}/"): {**HIT, "hitId": "{hit}", "label": "match"},
    ("POST", "/ext/link/{slug}/{study}/"): {**STUDY, "task": "{study_task}", "label": "match"},
    ("POST", "/accounts/login/"): {"username": "erin", "password": "not her password"},
}  # fmt: skip


def fill(template: str, world: World) -> str:
    """The template with project A's objects in its {placeholders}."""
    values = world.a.values()
    values["hit_query"] = "&".join(f"{k}={v}" for k, v in {**HIT, "hitId": world.a.hit}.items())
    values["study_query"] = "&".join(f"{k}={v}" for k, v in STUDY.items())
    return template.format(**values)


def body_for(method: str, template: str, world: World) -> Any:
    body = BODIES.get((method, template))
    if isinstance(body, dict):
        return {k: fill(v, world) if isinstance(v, str) else v for k, v in body.items()}
    return body


def call(client: Client, method: str, path: str, body: Any, *, api: bool) -> HttpResponse:
    send = getattr(client, method.lower())
    if body is None:
        return send(path)  # type: ignore[no-any-return]
    if api:
        return send(path, body, format="json")  # type: ignore[no-any-return]
    if method == "PATCH":
        raise AssertionError("pages take form posts only")
    return send(path, body)  # type: ignore[no-any-return]


def cells(table: list[tuple[Any, ...]]) -> Iterator[Any]:
    for method, template, *expected in table:
        for role, status in zip(ROLES, expected, strict=True):
            yield pytest.param(method, template, role, status, id=f"{method} {template} {role}")


@pytest.mark.parametrize(("method", "template", "role", "status"), list(cells(API)))
def test_the_api_answers_each_person_as_the_table_says(
    world: World, api_as: Callable[[str], APIClient], method: str, template: str, role: str,
    status: int,
) -> None:  # fmt: skip
    path = fill(template, world)
    response = call(api_as(role), method, path, body_for(method, template, world), api=True)

    assert response.status_code == status, response.content[:500]
    if status in (401, 403, 404):
        assert set(response.json()) <= {"detail", "code"}, "a refusal carries no data"


@pytest.mark.parametrize(("method", "template", "role", "status"), list(cells(PAGES)))
def test_the_pages_answer_each_person_as_the_table_says(
    world: World, browser_as: Callable[[str], Client], method: str, template: str, role: str,
    status: int,
) -> None:  # fmt: skip
    path = fill(template, world)
    response = call(browser_as(role), method, path, body_for(method, template, world), api=False)

    assert response.status_code == status, response.content[:500]
    if role == "anonymous" and status == 302 and not template.startswith(("/join", "/ext")):
        login = "/admin/login/" if path.startswith("/admin/") else "/accounts/login/"
        assert response["Location"].startswith(login)
    if status in (403, 404):
        assert world.a.project.name not in response.content.decode(), "a refusal names nothing"


def routes() -> set[str]:
    """Every route the product serves; the admin's many routes count as one, `admin/`."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[str]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                if pattern.app_name == "admin":
                    yield route
                else:
                    yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern):
                yield route

    return set(walk(get_resolver().url_patterns, ""))


def covered(world: World) -> set[str]:
    """The routes the tables' rows reach."""
    found = set()
    for _, template, *_ in API + PAGES:
        path = fill(template, world).split("?")[0]
        route = resolve(path).route
        found.add("admin/" if path.startswith("/admin/") else route)
    return found


def test_every_route_has_a_row(world: World, db: None) -> None:
    missing = routes() - covered(world)

    assert not missing, f"routes with no row in the access tables: {sorted(missing)}"


def test_every_admin_page_is_for_staff_only(
    world: World, browser_as: Callable[[str], Client]
) -> None:
    pages = ["/admin/", "/admin/password_change/"]
    for model in admin.site._registry:
        base = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        pages += [base, f"{base}add/", f"{base}1/change/"]
    for role in ROLES:
        client = browser_as(role)
        for page in pages:
            response = client.get(page)
            assert response.status_code == 302, (role, page)
            assert response["Location"].startswith("/admin/login/"), (role, page)


def unlisted_methods() -> Iterator[Any]:
    """(route template, method) for every method a route has no row for."""
    listed: dict[str, set[str]] = {}
    for method, template, *_ in API + PAGES:
        listed.setdefault(template.split("?")[0], set()).add(method)
    for template, methods in listed.items():
        if template.startswith(("/admin/", "/accounts/")):
            continue  # Django's own views: the admin (staff only, above), log-in and log-out
        for method in sorted({"GET", "POST", "PUT", "PATCH", "DELETE"} - methods):
            yield pytest.param(template, method, id=f"{method} {template}")


@pytest.mark.parametrize(("template", "method"), list(unlisted_methods()))
def test_a_method_a_route_has_no_row_for_is_not_allowed_even_for_its_engineer(
    world: World, api_as: Callable[[str], APIClient], browser_as: Callable[[str], Client],
    template: str, method: str,
) -> None:  # fmt: skip
    api = template.startswith("/api/")
    client = api_as("engineer") if api else browser_as("engineer")
    send = getattr(client, method.lower())

    response = send(fill(template, world))

    assert response.status_code == 405, response.content[:300]
