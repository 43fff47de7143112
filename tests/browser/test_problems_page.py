"""The problems page in a real browser: an expert reads the problems in priority order and the
chart, drills into one, and describes a new problem with a pattern; a crowd labeller is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from core.permissions import Role
from labelling.models import Problem, Project, QueueEntry
from labelling.services.labellers import labeller_create
from tests.browser.conftest import PASSWORD
from tests.labelling.problem_data import DOCTORS, VETS, build

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PAGE = "/projects/pet-match/problems/"


def person(project: Project, name: str, role: Role) -> str:
    labeller, _ = labeller_create(project=project, username=name, role=role)
    assert labeller.user is not None
    labeller.user.set_password(PASSWORD)
    labeller.user.save(update_fields=["password"])
    return name


@pytest.fixture
def built(project: Project) -> Project:
    build(project)
    return project


def test_an_expert_reads_drills_in_and_describes_a_problem(
    built: Project, page: Page, log_in: Callable[[str, str], None], expect: Any
) -> None:
    log_in(person(built, "ezra", Role.EXPERT), PAGE)

    rows = page.locator("#problems tbody tr[data-problem]")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text(VETS)
    expect(rows.nth(0).locator(".priority")).to_have_text("1.000")
    expect(rows.nth(1)).to_contain_text(DOCTORS)
    expect(page.locator("#error-chart .problem-line")).to_have_count(2)
    expect(page.locator("#error-chart circle")).to_have_count(4)

    # Into the doctors' patterns with the keyboard: focus the link, press Enter.
    page.get_by_role("link", name=DOCTORS).focus()
    page.keyboard.press("Enter")
    page.wait_for_url("**?problem=*")
    table = page.locator("#patterns")
    expect(table.locator("tbody tr")).to_have_count(4)
    expect(table.locator("thead")).to_contain_text("m1")
    d1 = table.locator("tbody tr", has_text="d1")
    expect(d1).to_contain_text("no_match")
    expect(d1).to_contain_text("✗")

    form = page.locator("#new-problem")
    form.get_by_label("Name").fill("pet sitters")
    form.get_by_label("Harm factor").fill("4")
    form.get_by_label("New patterns (JSON lines)").fill(
        '{"external_id": "s1", "payload": {"text": "sitter for cats"}}'
    )
    form.get_by_role("button", name="Create problem").press("Enter")
    expect(page.locator("[role=status]")).to_contain_text("1 pattern(s) queued")
    expect(page.locator("#drill")).to_contain_text("pet sitters")
    expect(page.locator("#patterns")).to_contain_text("waiting for labels")
    assert Problem.objects.get(name="pet sitters").harm == 4
    assert QueueEntry.objects.get(item__external_id="s1").rule == "problem"


def test_a_crowd_labeller_is_refused(
    built: Project, page: Page, log_in: Callable[[str, str], None], expect: Any
) -> None:
    log_in(person(built, "cora", Role.CROWD), PAGE)
    answer = page.goto(PAGE)
    assert answer is not None and answer.status == 403
    expect(page.locator("body")).not_to_contain_text(VETS)
