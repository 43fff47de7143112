"""Data migrations: what existing rows hold after them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from labelling.models import Escalation, Item, Project
from tests.labelling.release_world import T0, World

BEFORE, AFTER = ("labelling", "0010_problems"), ("labelling", "0011_item_decided_at")


@pytest.fixture
def migrate() -> Iterator[None]:
    yield
    # Back to the newest schema for the tests that follow.
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def migrate_to(target: tuple[str, str]) -> None:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


@pytest.mark.django_db(transaction=True)
def test_decided_items_are_backfilled_with_their_last_label_resolution_or_gold_time(
    project: Project, migrate: None
) -> None:
    world = World(project)
    world.item("labelled")  # valid labels at T0 + 1, 2 and 3 hours
    late = world.item("voided-later", labellers=("w1",))
    world.label(late, "w2", "match", T0 + timedelta(days=5), state="voided")
    resolved = world.item("resolved", state="resolved")
    Escalation.objects.create(
        project=project, item=resolved, reason="audit", resolved_at=T0 + timedelta(days=2),
        resolution="label", label="match",
    )  # fmt: skip
    world.item("gold-only", labellers=(), gold="match")
    Item.objects.filter(external_id="gold-only").update(gold_set_at=T0 + timedelta(days=3))
    world.item("bare", labellers=())
    world.item("collecting", state="collecting")

    migrate_to(BEFORE)
    migrate_to(AFTER)

    found = dict(Item.objects.values_list("external_id", "decided_at"))
    assert found == {
        "labelled": T0 + timedelta(hours=3),
        "voided-later": T0 + timedelta(hours=1),
        "resolved": T0 + timedelta(days=2),
        "gold-only": T0 + timedelta(days=3),
        "bare": T0,  # nothing else: its creation
        "collecting": None,
    }
