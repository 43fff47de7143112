"""What a session may do beyond its role: cross-site posts, a deactivated account, the home page's
list of projects, and the actions inside a page that are for engineers only."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

from labelling.models import ModelVersion
from tests.security.test_access_matrix import API, PAGES, body_for, fill
from tests.security.world import World

# Framed by Amazon on another site: no cookie comes, Amazon confirms the work (see the view).
CSRF_EXEMPT = {"/ext/mturk/{slug}/"}


@pytest.mark.parametrize(
    "template", [t for m, t, *_ in PAGES if m == "POST" and t not in CSRF_EXEMPT]
)
def test_a_page_refuses_a_post_without_the_forms_csrf_token(
    world: World, template: str, db: None
) -> None:
    client = Client(enforce_csrf_checks=True)
    engineer = world.people["engineer"]
    assert engineer is not None
    client.force_login(engineer)

    response = client.post(fill(template, world), body_for("POST", template, world))

    assert response.status_code == 403


@pytest.mark.parametrize(
    ("method", "template"), [(m, t) for m, t, *_ in API if m in ("POST", "PATCH")]
)
def test_the_api_refuses_a_session_call_without_the_csrf_token(
    world: World, method: str, template: str, db: None
) -> None:
    client = APIClient(enforce_csrf_checks=True)
    crowd = world.people["crowd" if "lease" in template else "engineer"]
    assert crowd is not None
    client.force_login(crowd)

    send = getattr(client, method.lower())
    response = send(fill(template, world), body_for(method, template, world), format="json")

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]


def test_a_deactivated_account_is_anonymous_everywhere(
    world: World, api_as: Callable[[str], APIClient], browser_as: Callable[[str], Client]
) -> None:
    api, browser = api_as("engineer"), browser_as("engineer")
    get_user_model().objects.filter(username="erin").update(is_active=False)

    assert api.get(f"/api/v1/releases/{world.a.release}").status_code == 401
    page = browser.get(f"/projects/{world.a.slug}/")
    assert page.status_code == 302 and page["Location"].startswith("/accounts/login/")


def test_the_home_page_lists_only_the_projects_one_works_on(
    world: World, browser_as: Callable[[str], Client]
) -> None:
    crowd = browser_as("crowd").get("/").content.decode()
    other = browser_as("engineer_other").get("/").content.decode()

    assert world.a.project.name in crowd and world.b.project.name not in crowd
    assert world.b.project.name in other and world.a.project.name not in other
    assert f"/projects/{world.a.slug}/" not in crowd, "no dashboard link for a crowd labeller"


def test_an_expert_cannot_describe_a_model_version_from_the_problems_page(
    world: World, browser_as: Callable[[str], Client]
) -> None:
    response = browser_as("expert").post(
        f"/projects/{world.a.slug}/problems/",
        {"action": "describe_version", "name": "m1", "note": "changed by an expert"},
    )

    assert response.status_code == 403
    assert ModelVersion.objects.get(project=world.a.project, name="m1").note == ""
