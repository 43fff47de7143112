"""Every page works under the Content-Security-Policy in a real browser: Chromium reports no
violation (a blocked script, style, image or form target) on any of them, and the scripted pages
still do their work (the labelling page shows an item, an image payload included)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from pytest_django import Settings

from core.permissions import Role
from labelling.crowd import services as crowd
from labelling.crowd.models import CrowdBatch
from labelling.models import Label, Project
from labelling.services.labellers import labeller_create
from tests.browser.conftest import PASSWORD
from tests.labelling.test_leasing import queued_project

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# A 1×1 PNG as a data: URL: payload images come as data: or http(s) URLs.
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
ENGINEER_PAGES = [
    "/",
    "/projects/pet-match/",
    "/projects/pet-match/releases/",
    "/projects/pet-match/threshold/",
    "/projects/pet-match/problems/",
    "/projects/pet-match/labellers/",
    "/projects/pet-match/crowd/",
    "/review/pet-match/",
    "/admin/",
    "/admin/labelling/project/",
]


@pytest.fixture
def violations(page: Page) -> Iterator[list[str]]:
    """What the browser refused under the policy, from its console and its violation events."""
    found: list[str] = []
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => console.error("
        "'CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
    )
    page.on(
        "console",
        lambda message: (
            found.append(message.text)
            if "Content Security Policy" in message.text or "CSP violation" in message.text
            else None
        ),
    )
    yield found


@pytest.fixture
def site(project: Project, settings: Settings) -> Project:
    settings.NEW_LABELLER_GOLD = 0
    settings.PUBLIC_URL = "http://localhost"
    queued_project(project, 4)
    item = project.items.get(external_id="i0")
    item.payload = {"text": "item 0", "photo": PIXEL}
    item.save(update_fields=["payload"])
    labeller, _ = labeller_create(project=project, username="erin", role=Role.ENGINEER)
    labeller.user.set_password(PASSWORD)
    labeller.user.is_staff = labeller.user.is_superuser = True
    labeller.user.save()
    batch = crowd.crowd_batch_create(
        project=project, platform="prolific", size=2, reward="0.05", assignments=1, user=None
    )
    crowd.crowd_batch_publish(batch=batch)
    return project


def test_the_engineers_pages_load_without_a_violation(
    page: Page, log_in: Callable[[str, str], None], site: Project, violations: list[str]
) -> None:
    log_in("erin", "/")
    for url in ENGINEER_PAGES:
        response = page.goto(url)
        assert response is not None and response.status == 200, url
        page.wait_for_load_state("networkidle")

    assert not violations


def test_the_labelling_page_shows_an_image_item_under_the_policy(
    page: Page,
    log_in: Callable[[str, str], None],
    site: Project,
    violations: list[str],
    expect: Any,
) -> None:
    log_in("erin", "/label/pet-match/")

    expect(page.locator("#stage img")).to_have_attribute("src", PIXEL)
    page.wait_for_function("() => document.querySelector('#stage img').naturalWidth === 1")
    assert not violations


def test_the_study_page_of_a_link_platform_works_under_the_policy(
    page: Page, site: Project, violations: list[str]
) -> None:
    token = CrowdBatch.objects.get(project=site).token
    page.goto(f"/ext/link/pet-match/{token}/?PROLIFIC_PID=P1&STUDY_ID=S1&SESSION_ID=X1")
    with page.expect_navigation():
        page.keyboard.press("1")

    page.wait_for_load_state("networkidle")
    assert not violations
    assert Label.objects.filter(labeller__worker_id="P1").count() == 1


def test_a_blocked_inline_script_is_reported(
    page: Page, site: Project, violations: list[str]
) -> None:
    """The check itself: an inline script on one of the pages is refused and seen."""
    page.goto("/accounts/login/")
    page.evaluate(
        "() => { const s = document.createElement('script'); s.textContent = '1'; "
        "document.body.append(s); }"
    )
    page.wait_for_timeout(200)

    assert any("script-src" in v for v in violations)
