"""Large releases on PostgreSQL: two ranges written at once on two connections in one snapshot
give the very bytes (and sha256) of one COPY, and a failure in either range writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pytest_django import Settings

from labelling.models import Project, Release
from labelling.releases import pgcopy
from labelling.services.releases import ReleaseRequest, release_create
from tests.labelling.release_world import World

pytestmark = [pytest.mark.needs_postgres, pytest.mark.django_db(transaction=True)]

# Byte order ("C") differs from the usual locales' order here: capitals, digits, punctuation.
IDS = ["b-2", "B-1", "a_10", "a-9", "Z", "0-x", "a.1"]


@pytest.fixture(autouse=True)
def exports(settings: Settings, tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    settings.EXPORT_STORAGE = folder.as_uri()
    settings.SECRET_KEY = "release-test-secret"
    return folder


@pytest.fixture
def world(project: Project) -> World:
    world = World(project)
    for n, external_id in enumerate(IDS):
        world.item(
            external_id,
            label="match" if n % 2 else "no_match",
            split="train",
            labellers=("w1", "w2", "w3")[: 1 + n % 3],
        )
    return world


def data_of(release: Release) -> bytes:
    return (Path(release.location.removeprefix("file://")) / release.data_file).read_bytes()


def spy_on_middle(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str | None]]:
    calls: list[tuple[int, str | None]] = []
    original = pgcopy.middle

    def middle(chosen: Any, below: int) -> str | None:
        calls.append((below, found := original(chosen, below)))
        return found

    monkeypatch.setattr(pgcopy, "middle", middle)
    return calls


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "manifest"])
def test_two_ranges_give_the_bytes_of_one_copy(
    world: World, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    calls = spy_on_middle(monkeypatch)
    monkeypatch.setattr(pgcopy, "SPLIT_FROM_ROWS", 10**9)
    whole = release_create(project=world.project, request=ReleaseRequest(fmt=fmt))
    assert calls == []
    monkeypatch.setattr(pgcopy, "SPLIT_FROM_ROWS", 2)
    halves = release_create(project=world.project, request=ReleaseRequest(fmt=fmt))

    # 7 rows: the first range holds 3, the second starts at the 4th id in byte order.
    assert calls == [(3, sorted(IDS)[3])]
    assert data_of(halves) == data_of(whole)
    assert halves.sha256 == whole.sha256 and halves.row_count == whole.row_count == len(IDS)
    assert halves.class_counts == whole.class_counts


def test_a_failing_second_range_writes_nothing(
    world: World, exports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcopy, "SPLIT_FROM_ROWS", 2)

    def broken(*args: Any) -> None:
        raise OSError("spool disk full")

    monkeypatch.setattr(pgcopy, "_spool", broken)
    with pytest.raises(OSError, match="spool disk full"):
        release_create(project=world.project)

    assert not Release.objects.exists()
    assert [p for p in exports.rglob("*") if p.is_file()] == []
