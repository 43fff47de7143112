"""Labellers' floors in the queue (PostgreSQL): a lease starts its search where the labeller's
earlier leases left off, and still gives exactly the item a search from the top would give."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.utils import timezone

from core.exceptions import Conflict
from core.permissions import Role
from labelling.models import Item, Labeller, Lease, Project, QueueEntry, QueueEpoch, QueueFloor
from labelling.services import consensus
from labelling.services.floors import queue_epochs_raise, queue_reopened
from labelling.services.labellers import labeller_create
from labelling.services.leasing import (
    _next_entry,
    entries_reopen,
    label_submit,
    label_undo,
    lease_next,
    lease_skip,
    leases_expire,
)
from labelling.services.queueing import queue_items_add
from labelling.tasks import expire_leases
from tests.labelling.test_leasing import import_items, queued_project

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def only_queue_items(settings: Any) -> None:
    settings.NEW_LABELLER_GOLD = 0


def crowd(project: Project, n: int) -> list[Labeller]:
    return [
        labeller_create(project=project, username=f"w{k}", role=Role.CROWD)[0] for k in range(n)
    ]


def test_a_labeller_alone_keeps_a_floor_just_below_their_last_item(
    project: Project, make_project: Callable[..., Project]
) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("floors are PostgreSQL's: SQLite leases search from the top")
    queued_project(project, 30, overlap=(3, 3))
    (alone,) = crowd(project, 1)
    order = list(QueueEntry.objects.filter(project=project).order_by("priority"))

    for k in range(20):
        lease = lease_next(project=project, labeller=alone)
        assert lease is not None and lease.item_id == order[k].item_id
        label_submit(lease_id=lease.pk, user=alone.user, value="match", duration_ms=10)
        floor = QueueFloor.objects.get(labeller=alone)
        # Every entry above the floor is theirs; the floor is the next entry, not the top.
        assert floor.priority == order[k + 1].priority

    # Something that may give them an item again voids the floor: the search starts at the top.
    lease = lease_next(project=project, labeller=alone)
    assert lease is not None
    lease.expires_at = timezone.now() - timedelta(seconds=1)
    lease.save(update_fields=["expires_at"])
    assert leases_expire() == 1
    epoch = QueueEpoch.objects.get(project=project).value
    assert QueueFloor.objects.get(labeller=alone).epoch != epoch
    again = lease_next(project=project, labeller=alone)
    assert again is not None and again.item_id == order[20].item_id
    assert QueueFloor.objects.get(labeller=alone).epoch == epoch
    # The periodic lease expiry, the safety net, voids every floor, in projects whose epoch was
    # never raised too.
    other = make_project(slug="other")
    expire_leases()
    assert QueueEpoch.objects.get(project=project).value == epoch + 1
    assert QueueEpoch.objects.get(project=other).value == 1


class World:
    """A project, a crowd, and every way the queue can change, checked against a search from
    the top of the queue before each lease."""

    def __init__(self, project: Project, seed: int) -> None:
        self.rng = random.Random(seed)
        self.project = project
        queued_project(project, 40, overlap=(2, 4))
        import_items(project, range(40, 60))  # not queued: queued ahead of the rest later
        spare = Item.objects.filter(project=project, queue_entry__isnull=True)
        self.spare = list(spare.values_list("pk", flat=True))
        self.labellers = crowd(project, 5)
        self.takes = 0
        self.from_floor = 0  # leases whose search started below the top of the queue

    def open_lease(self, labeller: Labeller) -> Lease | None:
        return Lease.objects.filter(labeller=labeller, state=Lease.State.OPEN).first()

    def take(self) -> None:
        labeller = self.rng.choice(self.labellers)
        if self.open_lease(labeller) is not None:
            return
        expected = _next_entry(self.project, labeller)
        epoch = QueueEpoch.objects.filter(project=self.project).values_list("value", flat=True)
        floor = QueueFloor.objects.filter(labeller=labeller, epoch=epoch.first() or 0).first()
        top = QueueEntry.objects.filter(project=self.project, collecting=True).order_by("priority")
        if floor is not None and top and floor.priority > top[0].priority:
            self.from_floor += 1
        lease = lease_next(project=self.project, labeller=labeller)
        got = None if lease is None else lease.item_id
        assert got == (None if expected is None else expected[1]), (
            f"{labeller.user.username} got item {got}, the top of the queue says {expected}"
        )
        self.takes += lease is not None

    def pick(self, state: Lease.State) -> Lease | None:
        """One of the project's leases in this state, chosen by the world's seed."""
        leases = Lease.objects.filter(project=self.project, state=state).order_by("pk")
        found = list(leases.select_related("labeller__user"))
        return self.rng.choice(found) if found else None

    def some_open_lease(self) -> Lease | None:
        return self.pick(Lease.State.OPEN)

    def answer(self) -> None:
        if lease := self.some_open_lease():
            value = self.rng.choice(["match", "no_match"])
            label_submit(lease_id=lease.pk, user=lease.labeller.user, value=value, duration_ms=5)

    def skip(self) -> None:
        if lease := self.some_open_lease():
            lease_skip(lease_id=lease.pk, user=lease.labeller.user)

    def expire(self) -> None:
        if lease := self.some_open_lease():
            Lease.objects.filter(pk=lease.pk).update(expires_at=timezone.now() - timedelta(1))
            leases_expire(project=self.project)

    def undo(self) -> None:
        if (lease := self.pick(Lease.State.LABELLED)) is not None:
            # Refused when the item has all its labels: then nothing changes.
            with contextlib.suppress(Conflict):
                label_undo(lease_id=lease.pk, user=lease.labeller.user)

    def entries(self, n: int) -> list[int]:
        entries = QueueEntry.objects.filter(project=self.project)
        ids = list(entries.order_by("pk").values_list("item_id", flat=True))
        return self.rng.sample(ids, min(n, len(ids)))

    def reopen(self) -> None:
        entries_reopen(project=self.project, item_ids=self.entries(3))

    def stop(self) -> None:
        QueueEntry.objects.filter(item_id__in=self.entries(2)).update(collecting=False)

    def restart(self) -> None:
        # As a consensus run writes them: collecting again, or one more label wanted.
        with transaction.atomic(), connection.cursor() as cursor:
            consensus._write_entries(cursor, self.project, self.entries(3), True)

    def queue_ahead(self) -> None:
        if self.spare:
            ahead, self.spare = self.spare[:3], self.spare[3:]
            queue_items_add(project=self.project, item_ids=ahead, rule="engineer")

    def step(self) -> None:
        moves = [self.take] * 12 + [self.answer] * 10 + [self.skip, self.expire, self.undo]
        moves += [self.reopen, self.stop, self.restart, self.queue_ahead]
        self.rng.choice(moves)()


@pytest.mark.parametrize("seed", range(4))
def test_a_lease_from_the_floor_is_the_lease_from_the_top(project: Project, seed: int) -> None:
    if connection.vendor != "postgresql":
        pytest.skip("floors are PostgreSQL's: SQLite leases search from the top")
    world = World(project, seed)
    for _ in range(400):
        world.step()
    assert world.takes > 50
    assert world.from_floor >= 10, "the floors were hardly used: the test checks little"


def test_epochs_rise_after_commit_and_all_at_once_on_either_database(
    project: Project, make_project: Callable[..., Project]
) -> None:
    make_project(slug="other")
    with transaction.atomic():
        queue_reopened([project.pk, project.pk])
        assert not QueueEpoch.objects.exists()  # not before the change is committed
    assert QueueEpoch.objects.get(project=project).value == 1
    assert queue_epochs_raise() == 2
    epochs = dict(QueueEpoch.objects.values_list("project__slug", "value"))
    assert epochs == {"pet-match": 2, "other": 1}
