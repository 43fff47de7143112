"""Fixtures of outside-crowd tests: a project with queued items, and the platforms behind the
adapter: an in-memory Mechanical Turk and the link-based platform (Prolific-style)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pytest_django import Settings

from labelling.crowd import platforms
from labelling.crowd.link import PROLIFIC, LinkPlatform
from labelling.crowd.mturk import MTurkPlatform
from labelling.models import Project
from labelling.policy import parse_policy
from labelling.services.imports import predictions_import
from labelling.services.queueing import queue_select
from tests.labelling.crowd.fakes import FakeMTurk

PUBLIC = "https://quorum.example.org"


def queue_items(project: Project, n: int, *, overlap: int = 4) -> Project:
    """n items (i0…) queued, an overlap of `overlap` labels, no gold."""
    project.overlap_min = project.overlap_max = overlap
    project.gold_rate = 0
    project.instructions = "Does the **pet** match the service?"
    project.save()
    rows = "\n".join(
        json.dumps(
            {
                "external_id": f"i{k}",
                "payload": {"text": f"item {k}"},
                "model_version": "m1",
                "probabilities": {"match": 0.5 + k / 1000, "no_match": 0.5 - k / 1000},
            }
        )
        for k in range(n)
    )
    predictions_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")
    queue_select(
        project=project, policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]})
    )
    return project


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
