"""CSRF on every form: each page is rendered and every form that posts carries the token; a post
without it is refused, on every page and on the API with a session.

The one exception is the page Mechanical Turk frames (`/ext/mturk/{slug}/`): it opens inside
Amazon's site, where no cookie of Quorum's arrives, so it is exempt; its answers become labels
only once Amazon lists the assignment, so a forged post gives nobody a label (README,
"Outside crowds").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern
from pytest_django import Settings

from core.permissions import Role
from labelling import urls as page_urls
from labelling.crowd import services as crowd
from labelling.models import Project
from labelling.services.invitations import invitation_create
from labelling.services.labellers import labeller_create
from tests.labelling.test_leasing import queued_project

pytestmark = pytest.mark.django_db
TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
# Pages exempt from CSRF, and why (see the module's docstring).
EXEMPT = {"ext-mturk": "framed by Amazon: no cookie arrives, Amazon confirms the work"}
POST_FORM = re.compile(r"<form\b[^>]*method=\"post\"[^>]*>(.*?)</form>", re.S | re.I)
TOKEN_INPUT = re.compile(r"<input[^>]*name=\"csrfmiddlewaretoken\"[^>]*value=\"[^\"]+\"")


@pytest.fixture(autouse=True)
def web(settings: Settings) -> None:
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.PUBLIC_URL = "https://quorum.example.org"


@dataclass
class Site:
    """A project with an engineer, queued items, a link-platform batch and an invitation."""

    project: Project
    engineer: Any
    labeller_id: int
    batch_token: str
    invitation_token: str


@pytest.fixture
def site(project: Project) -> Site:
    queued_project(project, 4)
    labeller, _ = labeller_create(project=project, username="erin", role=Role.ENGINEER)
    batch = crowd.crowd_batch_create(
        project=project, platform="prolific", size=2, reward="0.05", assignments=1, user=None
    )
    crowd.crowd_batch_publish(batch=batch)
    invitation = invitation_create(project=project, user=None)
    return Site(project, labeller.user, labeller.pk, batch.token, invitation.token)


STUDY = "?PROLIFIC_PID=P1&STUDY_ID=S1&SESSION_ID=X1"
# Every page route: its address, and whether an engineer of the project opens it logged in.
PAGES: dict[str, tuple[Callable[[Site], str], bool]] = {
    "login": (lambda s: "/accounts/login/", False),
    "home": (lambda s: "/", True),
    "project-dashboard": (lambda s: "/projects/pet-match/", True),
    "project-threshold": (lambda s: "/projects/pet-match/threshold/", True),
    "project-releases": (lambda s: "/projects/pet-match/releases/", True),
    "project-problems": (lambda s: "/projects/pet-match/problems/", True),
    "project-labellers": (lambda s: "/projects/pet-match/labellers/", True),
    "labeller-detail": (lambda s: f"/projects/pet-match/labellers/{s.labeller_id}/", True),
    "label-page": (lambda s: "/label/pet-match/", True),
    "review-page": (lambda s: "/review/pet-match/", True),
    "join": (lambda s: f"/join/{s.invitation_token}/", False),
    "project-crowd": (lambda s: "/projects/pet-match/crowd/", True),
    "ext-link": (lambda s: f"/ext/link/pet-match/{s.batch_token}/{STUDY}", False),
}


def client(site: Site, logged_in: bool, *, enforce: bool = False) -> Client:
    browser = Client(enforce_csrf_checks=enforce)
    if logged_in:
        browser.force_login(site.engineer)
    return browser


def test_the_table_covers_every_page_route() -> None:
    names = {p.name for p in page_urls.urlpatterns if isinstance(p, URLPattern)}

    assert names | {"login"} == set(PAGES) | set(EXEMPT)


def test_every_post_form_in_the_templates_carries_the_token() -> None:
    missing = []
    for path in TEMPLATES.rglob("*.html"):
        if path.name == "ext_mturk.html":  # the exempt page (EXEMPT)
            continue
        text = path.read_text()
        for form in POST_FORM.finditer(text):
            if "{% csrf_token %}" not in form.group(1):
                line = text[: form.start()].count("\n") + 1
                missing.append(f"{path.relative_to(TEMPLATES)} line {line}")

    assert not missing


@pytest.mark.parametrize("name", sorted(PAGES))
def test_every_rendered_page_puts_the_token_in_each_form_that_posts(site: Site, name: str) -> None:
    url, logged_in = PAGES[name]

    response = client(site, logged_in).get(url(site))

    page = response.content.decode()
    assert response.status_code == 200, page[:500]
    forms = POST_FORM.findall(page)
    assert forms or 'data-csrf="' in page, "the page posts by form or by its script"
    assert all(TOKEN_INPUT.search(form) for form in forms)
    if 'data-csrf="' in page:
        assert not re.search(r'data-csrf=""', page), "the script's token is empty"


@pytest.mark.parametrize("name", sorted(PAGES))
def test_a_post_without_the_token_is_refused(site: Site, name: str) -> None:
    url, logged_in = PAGES[name]

    response = client(site, logged_in, enforce=True).post(
        url(site), {"username": "erin", "password": "x", "label": "match", "action": "x"}
    )

    assert response.status_code == 403
    assert "CSRF" in response.content.decode()


def test_the_api_with_a_session_needs_the_token_and_accepts_it(site: Site) -> None:
    browser = client(site, True, enforce=True)
    browser.get("/label/pet-match/")
    token = browser.cookies["csrftoken"].value

    refused = browser.post("/api/v1/leases/1/label", {"label": "match"}, "application/json")
    accepted = browser.post(
        "/api/v1/leases/1/label", {"label": "match"}, "application/json", HTTP_X_CSRFTOKEN=token
    )

    assert refused.status_code == 403 and "CSRF" in refused.json()["detail"]
    assert accepted.status_code == 404, "past the CSRF check: no such lease"


def test_log_out_is_a_post_with_the_token(site: Site) -> None:
    browser = client(site, True, enforce=True)

    refused = browser.post("/accounts/logout/")

    assert refused.status_code == 403
    assert browser.get("/").status_code == 200, "still logged in"
