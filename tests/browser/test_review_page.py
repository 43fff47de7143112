"""The review page in a real browser: an expert resolves three escalations and removes a fourth
with the keyboard alone; a crowd labeller is refused."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from core.permissions import Role
from labelling.models import Escalation, Item, Project
from labelling.policy import parse_policy
from labelling.services.consensus import consensus_compute
from labelling.services.imports import predictions_import
from labelling.services.labellers import labeller_create
from labelling.services.labels import labels_import
from labelling.services.queueing import queue_select
from tests.browser.conftest import PASSWORD

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGE = "/review/pet-match/"


def person(project: Project, name: str, role: Role) -> str:
    labeller, _ = labeller_create(project=project, username=name, role=role)
    assert labeller.user is not None
    labeller.user.set_password(PASSWORD)
    labeller.user.save(update_fields=["password"])
    return name


@pytest.fixture
def escalated(make_project: Callable[..., Project]) -> Project:
    """Four items the crowd split on; the model is least sure of e0, then e1, e2, e3."""
    project = make_project(
        overlap={"min": 2, "max": 2, "target_confidence": 0.95},
        escalation={"below_confidence": 0.9, "audit_fraction": 0},
    )
    keys = [f"e{k}" for k in range(4)]
    rows = "\n".join(
        json.dumps(
            {
                "external_id": key,
                "payload": {"text": f"review me {key}"},
                "model_version": "m1",
                "probabilities": {"match": 0.55 + k / 10, "no_match": round(0.45 - k / 10, 6)},
            }
        )
        for k, key in enumerate(keys)
    )
    predictions_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")
    queue_select(
        project=project, policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]})
    )
    labels = "\n".join(
        json.dumps({"external_id": key, "labeller": f"w{i}", "label": label})
        for key in keys
        for i, label in enumerate(["match", "no_match"])
    )
    labels_import(project=project, stream=io.BytesIO(labels.encode()), fmt="jsonl")
    consensus_compute(project=project)
    assert Escalation.objects.filter(resolved_at__isnull=True).count() == 4
    return project


def on_screen(page: Page, after: str | None = None) -> str:
    """Wait until an escalation other than `after` is shown and ready; return its id."""
    page.wait_for_function(
        """(after) => {
            const stage = document.getElementById("stage");
            return stage.dataset.escalation && stage.dataset.escalation !== after
                && stage.getAttribute("aria-busy") === "false";
        }""",
        arg=after,
    )
    return page.get_attribute("#stage", "data-escalation") or ""


def test_an_expert_resolves_three_and_removes_one_with_the_keyboard(
    escalated: Project, page: Page, log_in: Callable[[str, str], None], expect: Any
) -> None:
    log_in(person(escalated, "ezra", Role.EXPERT), PAGE)

    shown = on_screen(page)
    expect(page.locator("#stage")).to_contain_text("review me e0")
    expect(page.locator("#crowd")).to_contain_text("w1")
    expect(page.locator("#model")).to_contain_text("match at 55 %")
    expect(page.locator("#posterior .bar")).to_have_count(2)
    page.keyboard.press("1")
    shown = on_screen(page, shown)
    expect(page.locator("#stage")).to_contain_text("review me e1")
    page.keyboard.press("2")
    shown = on_screen(page, shown)
    page.keyboard.press("1")
    shown = on_screen(page, shown)
    page.keyboard.press("n")
    page.keyboard.type("a duplicate of e0")
    page.keyboard.press("Escape")
    page.keyboard.press("r")
    expect(page.locator("#empty")).to_be_visible()
    expect(page.locator("#done-count")).to_have_text("4")
    expect(page.locator("#note")).to_have_value("")

    states = dict(Item.objects.values_list("external_id", "state"))
    assert states == {"e0": "resolved", "e1": "resolved", "e2": "resolved", "e3": "removed"}
    labels = dict(Item.objects.values_list("external_id", "expert_label"))
    assert (labels["e0"], labels["e1"], labels["e2"]) == ("match", "no_match", "match")
    removal = Escalation.objects.get(item__external_id="e3")
    assert (removal.resolution, removal.note, removal.resolved_by.username) == (
        "remove",
        "a duplicate of e0",
        "ezra",
    )


def test_gold_and_send_back_by_key(
    escalated: Project, page: Page, log_in: Callable[[str, str], None], expect: Any
) -> None:
    log_in(person(escalated, "ezra", Role.EXPERT), PAGE)

    shown = on_screen(page)
    page.keyboard.press("g")
    expect(page.locator("#mode")).to_be_visible()
    page.keyboard.press("2")
    shown = on_screen(page, shown)
    page.keyboard.press("b")
    expect(page.locator("#notice")).to_contain_text("needs a note")
    page.keyboard.type("say whether a groomer counts")
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    on_screen(page, shown)

    e0, e1 = Item.objects.get(external_id="e0"), Item.objects.get(external_id="e1")
    assert (e0.state, e0.gold_label) == ("resolved", "no_match")
    assert e1.state == "collecting"


def test_a_crowd_labeller_is_refused(
    escalated: Project, page: Page, log_in: Callable[[str, str], None], expect: Any
) -> None:
    log_in(person(escalated, "cora", Role.CROWD), PAGE)

    response = page.goto(PAGE)
    api = page.request.get("/api/v1/projects/pet-match/escalations/next")

    assert response is not None and response.status == 403
    expect(page.locator("main")).to_contain_text("expert")
    assert page.locator("#stage").count() == 0
    assert api.status == 403
    assert Escalation.objects.filter(resolved_at__isnull=True, leased_to__isnull=False).count() == 0
