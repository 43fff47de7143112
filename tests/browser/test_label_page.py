"""The labelling page in a real browser: keyboard-only labelling, expiry, skip and undo, and the
end of the queue. Each test logs in through the login form as a crowd labeller."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from django.utils import timezone
from pytest_django import Settings

from core.permissions import Role
from labelling.models import Label, Lease, Project
from labelling.services.labellers import labeller_create
from tests.browser.conftest import PASSWORD
from tests.labelling.test_leasing import queued_project

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGE = "/label/pet-match/"
LogIn = Callable[[str, str], None]


@pytest.fixture(autouse=True)
def no_gold_warm_up(settings: Settings) -> None:
    """Queue items straight away: gold checks are not what these tests are about."""
    settings.NEW_LABELLER_GOLD = 0


@pytest.fixture
def cora(project: Project) -> str:
    """A crowd labeller with a password, made through the labeller service."""
    labeller, _ = labeller_create(project=project, username="cora", role=Role.CROWD)
    assert labeller.user is not None
    labeller.user.set_password(PASSWORD)
    labeller.user.save(update_fields=["password"])
    return "cora"


def queue_items(project: Project, n: int) -> None:
    """Import n predictions and queue them all (i0 first), with no gold checks."""
    queued_project(project, n, overlap=(project.overlap_min, project.overlap_max))


def next_item(page: Page, after: int | None = None, timeout: float | None = None) -> int:
    """Wait until an item other than lease `after` is on screen and ready (within `timeout` ms,
    else the page's default); return its lease."""
    page.wait_for_function(
        """(after) => {
            const stage = document.getElementById("stage");
            return stage.dataset.lease && stage.dataset.lease !== String(after)
                && stage.getAttribute("aria-busy") === "false";
        }""",
        arg=after,
        timeout=timeout,
    )
    return int(page.get_attribute("#stage", "data-lease") or 0)


def test_a_crowd_labeller_labels_five_items_with_the_keyboard_alone(
    page: Page, log_in: LogIn, project: Project, cora: str, expect: Any
) -> None:
    queue_items(project, 5)
    asked = []  # the page's tasks/next calls: each answer brings the next item itself
    page.on(
        "request",
        lambda request: asked.append(request.url) if "/tasks/next" in request.url else None,
    )
    log_in(cora, PAGE)
    lease = next_item(page)
    keys = ["1", "2", "1", "2", "1"]

    leases = []
    for done, key in enumerate(keys, start=1):
        leases.append(lease)
        if done == 1:
            page.wait_for_timeout(300)  # the first answer takes a measurable while
        page.keyboard.press(key)
        expect(page.locator("#done-count")).to_have_text(str(done))
        if done < len(keys):
            lease = next_item(page, after=lease)

    expect(page.locator("#empty")).to_be_visible()
    assert len(asked) == 1, asked  # the first item only
    labels = list(Label.objects.order_by("created_at", "pk"))
    assert [label.value for label in labels] == ["match", "no_match", "match", "no_match", "match"]
    assert [label.lease_id for label in labels] == leases
    assert {(label.state, label.source) for label in labels} == {("valid", "web")}
    assert {label.labeller.user.username for label in labels} == {"cora"}  # type: ignore[union-attr]
    assert labels[0].duration_ms is not None and labels[0].duration_ms >= 300
    assert all(label.duration_ms is not None for label in labels)


def test_a_lease_that_expires_mid_item_is_said_and_a_new_item_follows(
    page: Page, log_in: LogIn, project: Project, cora: str, expect: Any
) -> None:
    queue_items(project, 2)
    log_in(cora, PAGE)
    lease = next_item(page)
    Lease.objects.filter(pk=lease).update(expires_at=timezone.now() - timedelta(seconds=1))

    page.keyboard.press("1")

    expect(page.locator("#notice")).to_contain_text("expired")
    assert next_item(page, after=lease) != lease
    expect(page.locator("#done-count")).to_have_text("0")
    assert not Label.objects.exists()
    assert Lease.objects.get(pk=lease).state == Lease.State.EXPIRED


def test_s_skips_and_u_takes_back_the_last_answer(
    page: Page, log_in: LogIn, project: Project, cora: str, expect: Any
) -> None:
    queue_items(project, 3)
    log_in(cora, PAGE)
    skipped = next_item(page)

    page.keyboard.press("s")
    answered = next_item(page, after=skipped)
    page.keyboard.press("2")
    third = next_item(page, after=answered)
    expect(page.locator("#done-count")).to_have_text("1")
    page.keyboard.press("u")

    assert next_item(page, after=third) == answered
    expect(page.locator("#done-count")).to_have_text("0")
    expect(page.locator("#notice")).to_contain_text("taken back")
    assert Lease.objects.get(pk=skipped).state == Lease.State.SKIPPED
    assert Lease.objects.get(pk=answered).state == Lease.State.OPEN
    assert Label.objects.get().state == Label.State.VOIDED

    # Undo gave back the item the labeller had moved on to; answering again brings it back.
    assert Lease.objects.get(pk=third).state == Lease.State.EXPIRED
    page.keyboard.press("1")

    following = next_item(page, after=answered)
    assert Lease.objects.get(pk=following).item_id == Lease.objects.get(pk=third).item_id
    expect(page.locator("#done-count")).to_have_text("1")
    valid = Label.objects.get(state=Label.State.VALID)
    assert (valid.lease_id, valid.value) == (answered, "match")


def test_an_empty_queue_says_nothing_is_left_and_check_again_finds_new_work(
    page: Page, log_in: LogIn, project: Project, cora: str, expect: Any
) -> None:
    log_in(cora, PAGE)

    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#empty")).to_contain_text("Nothing left for you")
    expect(page.locator("#check-again")).to_be_focused()
    expect(page.locator("#stage")).to_be_hidden()

    queue_items(project, 1)
    page.keyboard.press("Enter")

    next_item(page)
    expect(page.locator("#stage")).to_contain_text("item 0")
    expect(page.locator("#empty")).to_be_hidden()


def test_a_heartbeat_keeps_the_shown_items_lease_open(
    page: Page, log_in: LogIn, project: Project, cora: str
) -> None:
    queue_items(project, 1)
    # The page beats every minute; serve it a faster beat rather than wait.
    page.route(
        f"**{PAGE}",
        lambda route: route.fulfill(
            response=(response := route.fetch()),
            body=response.text().replace('"heartbeat_ms": 60000', '"heartbeat_ms": 200'),
        ),
    )
    with page.expect_response("**/api/v1/projects/pet-match/tasks/next") as task:
        log_in(cora, PAGE)
    lease = next_item(page)

    with page.expect_response(f"**/api/v1/leases/{lease}/heartbeat") as beat:
        pass

    assert beat.value.status == 200
    assert beat.value.json()["state"] == "open"
    assert beat.value.json()["expires_at"] > task.value.json()["expires_at"]


def test_a_throttled_answer_says_slow_down_and_is_sent_again(
    page: Page, log_in: LogIn, project: Project, cora: str, expect: Any
) -> None:
    queue_items(project, 2)
    log_in(cora, PAGE)
    lease = next_item(page)
    refusals: list[str] = []

    def throttle_once(route: Any) -> None:
        if refusals:
            return route.continue_()
        refusals.append(route.request.url)
        # Long enough for the notice to be seen on a loaded machine: with 2 s it was once sent
        # again, and the notice cleared, before the check looked.
        route.fulfill(status=429, headers={"Retry-After": "5"}, json={"detail": "throttled"})

    page.route("**/api/v1/leases/*/label", throttle_once)
    page.keyboard.press("2")

    expect(page.locator("#notice")).to_contain_text("Slow down")
    next_item(page, after=lease, timeout=15_000)  # sent again after the 5 s asked for
    expect(page.locator("#done-count")).to_have_text("1")
    assert len(refusals) == 1
    assert Label.objects.get().lease_id == lease
