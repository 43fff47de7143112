"""Fixtures of outside-crowd tests: a project with queued items, and the platforms behind the
adapter: an in-memory Mechanical Turk and the link-based platform (Prolific-style)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_django import Settings

from labelling.crowd import platforms
from labelling.crowd.link import PROLIFIC, LinkPlatform
from labelling.crowd.mturk import MTurkPlatform
from labelling.models import Project
from tests.labelling.crowd.fakes import FakeMTurk
from tests.labelling.test_leasing import queued_project

PUBLIC = "https://quorum.example.org"


def queue_items(project: Project, n: int, *, overlap: int = 4) -> Project:
    """n items (i0…) queued, an overlap of `overlap` labels, no gold."""
    project.instructions = "Does the **pet** match the service?"
    return queued_project(project, n, overlap=(overlap, overlap))


@pytest.fixture(autouse=True)
def public_url(settings: Settings) -> None:
    settings.PUBLIC_URL = PUBLIC
    settings.NEW_LABELLER_GOLD = 0


@pytest.fixture
def fake_mturk(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeMTurk]:
    """The in-memory Mechanical Turk, behind the real adapter, for every service and page."""
    fake = FakeMTurk()
    sleeps: list[float] = []
    monkeypatch.setitem(
        platforms.PLATFORMS, "mturk", lambda: MTurkPlatform(fake, sleep=sleeps.append)
    )
    fake.sleeps = sleeps  # type: ignore[attr-defined]
    yield fake


@pytest.fixture
def make_queued(project: Project) -> Callable[..., Project]:
    def make(n: int = 24, **kwargs: Any) -> Project:
        return queue_items(project, n, **kwargs)

    return make


@pytest.fixture
def link_platform() -> LinkPlatform:
    return LinkPlatform(PROLIFIC)
