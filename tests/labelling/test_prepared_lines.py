"""Release lines prepared ahead of a release (PostgreSQL): the same bytes as lines built by the
release, taken only while nothing they were built from has changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import psycopg
import pytest
from django.core.management import call_command
from django.db import OperationalError, connection, transaction
from pytest_django import Settings

from labelling.models import (
    Consensus,
    Escalation,
    Item,
    Label,
    Prediction,
    PreparedCsv,
    PreparedJsonl,
    PreparedManifest,
    Project,
    QueueEntry,
)
from labelling.releases import pgcopy, prepared
from labelling.releases.rows import Filters, selection
from tests.labelling.release_world import T0, World

FORMATS = ("jsonl", "csv", "manifest")
TABLES = (PreparedJsonl, PreparedCsv, PreparedManifest)
PERSONAL = ("email",)  # the project's personal fields: what a release leaves out by default


@pytest.fixture(autouse=True)
def secret(settings: Settings) -> None:
    settings.SECRET_KEY = "prepared-lines-secret"


@pytest.fixture
def world(make_project: Callable[..., Project]) -> World:
    """A project whose rows cover every kind of line: consensus, expert, gold, unlabelled,
    unqueued, personal fields, text that needs escaping in JSON and in CSV."""
    world = World(make_project(personal_fields=["email"]))
    world.item("a1", payload={"text": 'quote " comma , and\nnewline', "email": "x@y"})
    world.item("a2", label="no_match", gold="no_match", split="test")
    world.item("a3", labellers=(), queued=False)
    resolved = world.item("a4", state="resolved", label="match", source="partner")
    Escalation.objects.create(
        project=world.project,
        item=resolved,
        reason="low_confidence",
        resolved_at=T0 + timedelta(days=2),
        resolution="label",
        label="no_match",
    )
    Item.objects.filter(pk=resolved.pk).update(expert_label="no_match")
    world.item("a5", payload={"text": "ünïcode ✓", "n": [1, None]}, confidence=0.5)
    world.item("z9", state="collecting")  # not decided: never prepared
    return world


def release_bytes(project: Project, fmt: str, omit: tuple[str, ...] = PERSONAL) -> bytes:
    """The data file a release writes now (prepared lines where there are)."""
    chosen = selection(project, Filters(), None)
    with transaction.atomic():
        return b"".join(pgcopy.copy_chunks(project, chosen, fmt, omit))


def built_bytes(project: Project, fmt: str, omit: tuple[str, ...] = PERSONAL) -> bytes:
    """The data file with every line built by the release, none prepared."""
    chosen = selection(project, Filters(), None)
    sql, params = pgcopy._statement(project, chosen, fmt, omit, [])
    with connection.cursor() as cursor, cursor.cursor.copy(sql, params) as copy:
        body = b"".join(pgcopy._fields(copy))
    return (pgcopy.csv_header() if fmt == "csv" else b"") + body


def lines_of(project: Project) -> set[int]:
    """The items with prepared lines: the same in every format's table."""
    found = [
        set(table.objects.filter(item__project=project).values_list("item_id", flat=True))
        for table in TABLES
    ]
    assert found[0] == found[1] == found[2]
    return found[0]


def item_id(external_id: str) -> int:
    return Item.objects.get(external_id=external_id).pk


@pytest.mark.needs_postgres
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("omit", [(), PERSONAL])
def test_prepared_lines_give_the_bytes_built_lines_give(
    world: World, fmt: str, omit: tuple[str, ...]
) -> None:
    project = world.project
    built = built_bytes(project, fmt, omit)
    assert prepared.lines_prepare(project) == 5
    assert lines_of(project) == {item_id(e) for e in ("a1", "a2", "a3", "a4", "a5")}
    run = pgcopy.choice(project, selection(project, Filters(), None), fmt, omit, [])
    with connection.cursor() as cursor:
        # Personal fields kept: no prepared line serves, every line is built.
        assert run.needs(cursor) == ((True, False) if omit == PERSONAL else (False, True))
    assert release_bytes(project, fmt, omit) == built
    # Some prepared, some built, in one file.
    for table in TABLES:
        table.objects.filter(item_id__in=[item_id("a2"), item_id("a4")]).delete()
    assert release_bytes(project, fmt, omit) == built
    # Two items a window: the missing two are found in the windows they fall in.
    assert prepared.lines_prepare(project, chunk=2) == 2
    assert prepared.lines_prepare(project, chunk=2) == 0
    assert len(lines_of(project)) == 5


@pytest.mark.needs_postgres
def test_a_release_reads_the_prepared_lines(world: World) -> None:
    project = world.project
    prepared.lines_prepare(project)
    PreparedJsonl.objects.filter(item_id=item_id("a3")).update(line='{"seen":"a3"}\n')
    assert b'\n{"seen":"a3"}\n' in release_bytes(project, "jsonl")


def later(at: datetime = T0) -> datetime:
    return at + timedelta(days=30)


CHANGES: dict[str, Callable[[World], None]] = {
    "a label added": lambda w: w.label(Item.objects.get(external_id="a1"), "w9", "match", later()),
    "a label voided": lambda w: Label.objects.filter(
        item__external_id="a1", labeller__worker_id="w2"
    ).update(state="voided"),
    "a label deleted": lambda w: Label.objects.filter(
        item__external_id="a1", labeller__worker_id="w3"
    ).delete(),
    "the consensus's confidence": lambda w: Consensus.objects.filter(item__external_id="a1").update(
        confidence=0.51
    ),
    "the consensus deleted": lambda w: Consensus.objects.filter(item__external_id="a1").delete(),
    "the queue entry's rule": lambda w: QueueEntry.objects.filter(item__external_id="a1").update(
        rule="uncertain"
    ),
    "a prediction added": lambda w: (
        Prediction.objects.create(
            item=Item.objects.get(external_id="a1"),
            model_version="m3",
            probabilities=[0.1, 0.9],
            predicted_label="no_match",
            confidence=0.9,
            digest="e",
            created_at=later(),
        )
        and QueueEntry.objects.filter(item__external_id="a1").delete()
    ),
    "a prediction changed": lambda w: Prediction.objects.filter(
        item__external_id="a1", model_version="m1"
    ).update(probabilities=[0.3, 0.7]),
    "an escalation resolved": lambda w: (
        Escalation.objects.create(
            project=w.project,
            item=Item.objects.get(external_id="a1"),
            reason="audit",
            resolved_at=later(),
            resolution="label",
            label="match",
        )
        and Item.objects.filter(external_id="a1").update(state="resolved")
    ),
    "the gold answer": lambda w: Item.objects.filter(external_id="a1").update(
        gold_label="no_match", gold_set_at=later()
    ),
    "the expert's label": lambda w: Item.objects.filter(external_id="a1").update(
        expert_label="no_match"
    ),
    "the split": lambda w: Item.objects.filter(external_id="a1").update(split="test"),
    "the payload": lambda w: Item.objects.filter(external_id="a1").update(payload={"text": "v2"}),
    "the external id": lambda w: Item.objects.filter(external_id="a1").update(external_id="a0"),
    "the source": lambda w: Item.objects.filter(external_id="a1").update(source="elsewhere"),
    "sent back to the crowd": lambda w: Item.objects.filter(external_id="a1").update(
        state="collecting"
    ),
}


@pytest.mark.needs_postgres
@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_to_what_a_line_reads_deletes_it(world: World, change: str) -> None:
    project = world.project
    prepared.lines_prepare(project)
    before, changed = release_bytes(project, "jsonl"), item_id("a1")

    CHANGES[change](world)

    assert changed not in lines_of(project)
    assert len(lines_of(project)) == 4  # the other items' lines stay
    after = release_bytes(project, "jsonl")
    assert after == built_bytes(project, "jsonl") and after != before
    if change != "sent back to the crowd":
        assert prepared.lines_prepare(project) == 1
        assert release_bytes(project, "jsonl") == after


@pytest.mark.needs_postgres
def test_changes_no_line_reads_keep_the_lines(world: World) -> None:
    project = world.project
    prepared.lines_prepare(project)
    kept = lines_of(project)
    # What a consensus run rewrites every time, a queue entry's place in the queue, a
    # decision's time, an undecided item's state.
    Consensus.objects.update(computed_at=datetime.now(UTC), posterior=[0.5, 0.5])
    QueueEntry.objects.update(score=0.9, priority=99)
    Item.objects.update(decided_at=datetime.now(UTC))
    Item.objects.filter(external_id="z9").update(state="approved")
    # A new item's predictions, queue entry, labels and consensus: other items' lines stay.
    world.item("y1", state="collecting")
    assert lines_of(project) == kept


@pytest.mark.needs_postgres
def test_lines_of_another_key_are_not_read(world: World, settings: Settings) -> None:
    project = world.project
    prepared.lines_prepare(project)
    PreparedJsonl.objects.update(line='{"stale":1}\n')
    settings.SECRET_KEY = "another-secret"  # other pseudonyms: another key
    assert b"stale" not in release_bytes(project, "jsonl")
    assert release_bytes(project, "jsonl") == built_bytes(project, "jsonl")
    project.labels = ["match", "no_match", "unsure"]
    project.save()
    assert pgcopy.lines_key(project) != PreparedJsonl.objects.first().key
    assert prepared.lines_prepare(project) == 5
    assert release_bytes(project, "jsonl") == built_bytes(project, "jsonl")


def other_connection() -> psycopg.Connection[Any]:
    return psycopg.connect(**connection.get_connection_params(), autocommit=True)


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)  # the world's writes commit, and their locks go
@pytest.mark.parametrize("write", ["label", "prediction"])
def test_a_change_waits_while_a_preparer_holds_the_locks(world: World, write: str) -> None:
    project = world.project
    item = Item.objects.get(external_id="a1")

    def change(n: int) -> None:
        if write == "label":
            world.label(item, f"w{n}", "match", later())
        else:
            Prediction.objects.create(
                item=item,
                model_version=f"m{n}",
                probabilities=[0.5, 0.5],
                predicted_label="match",
                confidence=0.5,
                digest="e",
                created_at=later(),
            )

    with other_connection() as preparer, preparer.transaction():
        assert preparer.execute(
            "SELECT pg_try_advisory_xact_lock(%s, %s) AND pg_try_advisory_xact_lock(%s, 0)",
            [prepared.LOCK_NAMESPACE, project.pk, prepared.LOCK_NAMESPACE],
        ).fetchone() == (True,)
        with pytest.raises(OperationalError, match="lock timeout"), transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '200ms'")
            change(8)
    change(7)  # once they are released


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("key", ["project", "every project"])
def test_the_preparer_gives_way_to_changes_in_flight(
    world: World, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setattr(prepared, "LOCK_SECONDS", 0.1)
    held = world.project.pk if key == "project" else 0
    with other_connection() as writer, writer.transaction():
        writer.execute(
            "SELECT pg_advisory_xact_lock_shared(%s, %s)", [prepared.LOCK_NAMESPACE, held]
        )
        assert prepared.lines_prepare(world.project) == 0
    assert not lines_of(world.project)
    assert prepared.lines_prepare(world.project) == 5


@pytest.mark.needs_postgres
def test_the_command_prepares_one_project_or_all(world: World, make_project: Any) -> None:
    other = World(make_project(slug="other"))
    other.item("b1")
    out = StringIO()
    call_command("prepare_release_lines", world.project.slug, stdout=out)
    assert out.getvalue().startswith("5 lines prepared in ")
    call_command("prepare_release_lines", stdout=out)
    assert "1 lines prepared in " in out.getvalue()
    assert len(lines_of(other.project)) == 1


def test_sqlite_prepares_nothing(world: World) -> None:
    if connection.vendor == "postgresql":
        pytest.skip("SQLite only: its releases are written in Python")
    assert prepared.lines_prepare(world.project) == 0
    assert not any(table.objects.exists() for table in TABLES)


@pytest.mark.needs_postgres
def test_workers_prepare_lines_after_a_consensus_run_and_periodically(world: World) -> None:
    from labelling import tasks

    tasks.aggregate_project(world.project.pk)
    decided = set(
        Item.objects.filter(project=world.project, state__in=["approved", "resolved"])
        .exclude(deactivated_at__isnull=False)
        .values_list("pk", flat=True)
    )
    assert decided and lines_of(world.project) == decided
    for table in TABLES:
        table.objects.all().delete()
    assert tasks.prepare_release_lines() == len(decided)
    assert lines_of(world.project) == decided
