"""Leasing under real concurrency: many labellers at once, each on its own PostgreSQL connection.

Every worker thread gets its own database connection (Django keeps one a thread) and calls the
real services, so row locks, `SKIP LOCKED`, constraint checks and deadlock detection are
PostgreSQL's own. A deadlock, a serialization failure or a constraint violation in any thread
fails the test.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count, F

from core.permissions import Role
from labelling.models import Label, Labeller, Lease, Project, QueueEntry
from labelling.services.labellers import labeller_create
from labelling.services.leasing import label_submit, lease_next
from tests.labelling.test_leasing import queued_project

pytestmark = [pytest.mark.needs_postgres, pytest.mark.django_db(transaction=True)]

LABELLERS, ITEMS, OVERLAP = 16, 40, 5
# Consensus recomputes in-process after every answer here: smaller runs keep the file fast.
SMALL_ITEMS = 20
# A run takes a few seconds; anything near this means a thread is stuck behind a lock.
DEADLINE_SECONDS = 60


@pytest.fixture(autouse=True)
def no_gold_warm_up(settings: Any) -> None:
    """Only queue items: gold checks do not count towards an item's overlap."""
    settings.NEW_LABELLER_GOLD = 0


@dataclass
class Worker:
    """What one labeller's thread did: the labels it was told were stored, and what went wrong
    (each error as "Type: message" on its first line, then the traceback)."""

    labeller: Labeller
    label_ids: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    # "Nothing for you" answers while an item still wanted this labeller (a SKIP LOCKED miss).
    early_nones: int = 0


def still_wanted(labeller: Labeller) -> bool:
    """Whether any item still wants a label from this labeller, ignoring row locks."""
    given = Lease.objects.filter(labeller=labeller).exclude(state="expired").values("item_id")
    open_entries = QueueEntry.objects.filter(
        project_id=labeller.project_id,
        collecting=True,
        needed__gt=F("labels_count") + F("open_leases"),
    )
    return open_entries.exclude(item_id__in=given).exists()


def run_in_threads(workers: list[Worker], body: Callable[[Worker], None]) -> None:
    """Run body(worker) in one thread per worker, all released at once, each closing its
    own database connection at the end."""
    start = threading.Barrier(len(workers))

    def run(worker: Worker) -> None:
        try:
            start.wait()
            body(worker)
        except Exception as exc:
            first_line = (str(exc).splitlines() or [""])[0]
            worker.errors.append(f"{type(exc).__name__}: {first_line}\n{traceback.format_exc()}")
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + DEADLINE_SECONDS
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "a labeller thread is stuck"


def assert_no_errors(workers: list[Worker]) -> None:
    """No thread saw an error: name how many failed, with what, and show the first in full."""
    errors = [error for worker in workers for error in worker.errors]
    kinds = Counter(error.splitlines()[0] for error in errors)
    assert not errors, (
        f"{len(errors)} of {len(workers)} threads failed: {dict(kinds)}\nthe first:\n{errors[0]}"
    )


def label_until_done(worker: Worker) -> None:
    """A labeller's loop: take the next item and answer it, until nothing is left for them."""
    labeller = worker.labeller
    project, user = labeller.project, labeller.user
    rng = random.Random(labeller.pk)
    while True:
        lease = lease_next(project=project, labeller=labeller)
        if lease is None:
            if not still_wanted(labeller):
                return
            # An item still wants us but was locked by someone else's write: ask again.
            worker.early_nones += 1
            time.sleep(0.002)
            continue
        submitted = label_submit(
            lease_id=lease.pk,
            user=user,
            value=rng.choice(project.labels),
            duration_ms=rng.randint(500, 5000),
        )
        assert submitted.created, f"lease {lease.pk} was answered twice"
        worker.label_ids.append(submitted.label.pk)


def make_crowd(project: Project, *, items: int, overlap: tuple[int, int]) -> list[Worker]:
    """The project with `items` queued items at this overlap, and LABELLERS labellers."""
    queued_project(project, n=items, overlap=overlap)
    workers = []
    for k in range(LABELLERS):
        labeller, _ = labeller_create(project=project, username=f"crowd{k}", role=Role.CROWD)
        workers.append(
            Worker(Labeller.objects.select_related("project", "user").get(pk=labeller.pk))
        )
    return workers


@pytest.fixture
def crowd(project: Project) -> list[Worker]:
    """A project of ITEMS queued items wanting exactly OVERLAP labels, and LABELLERS labellers."""
    return make_crowd(project, items=ITEMS, overlap=(OVERLAP, OVERLAP))


def test_concurrent_labellers_give_every_item_exactly_its_overlap(crowd: list[Worker]) -> None:
    run_in_threads(crowd, label_until_done)

    assert_no_errors(crowd)
    valid = Label.objects.filter(state=Label.State.VALID)
    per_item = dict(valid.values_list("item_id").annotate(n=Count("id")))
    assert len(per_item) == ITEMS
    assert set(per_item.values()) == {OVERLAP}, per_item
    pairs = list(valid.values_list("item_id", "labeller_id"))
    assert len(pairs) == len(set(pairs)) == ITEMS * OVERLAP
    reported = sorted(pk for worker in crowd for pk in worker.label_ids)
    assert reported == sorted(valid.values_list("pk", flat=True))
    entries = list(QueueEntry.objects.values_list("labels_count", "needed", "open_leases"))
    assert len(entries) == ITEMS
    assert all(count == needed == OVERLAP and opened == 0 for count, needed, opened in entries)
    assert not QueueEntry.objects.filter(collecting=True).exists()
    assert not Lease.objects.filter(state=Lease.State.OPEN).exists()


def test_no_labeller_is_told_nothing_is_left_while_an_item_still_wants_them(
    project: Project,
) -> None:
    workers = make_crowd(project, items=SMALL_ITEMS, overlap=(OVERLAP, OVERLAP))

    run_in_threads(workers, label_until_done)

    assert_no_errors(workers)
    early = {w.labeller.user.username: w.early_nones for w in workers if w.early_nones}
    # An item row locked by another labeller's answer is skipped (SKIP LOCKED); when such rows
    # are all that is left, the labeller must get one of them, not a 204 "nothing left".
    assert not early, f"told 'nothing left' while items still wanted them: {early}"


def test_disagreeing_labellers_never_push_an_item_past_its_maximum_overlap(
    project: Project,
) -> None:
    # Random answers disagree, so items ask for more labels up to overlap.max, while consensus
    # (in-process here, as without Redis) recomputes after every answer and may change `needed`
    # and `collecting` under the labellers' feet.
    workers = make_crowd(project, items=SMALL_ITEMS, overlap=(3, 5))

    run_in_threads(workers, label_until_done)

    assert_no_errors(workers)
    valid = Label.objects.filter(state=Label.State.VALID)
    pairs = list(valid.values_list("item_id", "labeller_id"))
    assert len(pairs) == len(set(pairs))
    per_item = dict(valid.values_list("item_id").annotate(n=Count("id")))
    for entry in QueueEntry.objects.all():
        assert entry.open_leases == 0
        assert 3 <= entry.labels_count <= entry.needed <= 5, entry.__dict__
        assert per_item.get(entry.item_id, 0) == entry.labels_count


def test_a_double_submitted_answer_is_stored_once(crowd: list[Worker]) -> None:
    labeller = crowd[0].labeller
    lease = lease_next(project=labeller.project, labeller=labeller)
    assert lease is not None
    results: list[bool] = []
    clicks = [Worker(labeller) for _ in range(8)]

    def click(worker: Worker) -> None:
        submitted = label_submit(
            lease_id=lease.pk, user=labeller.user, value="match", duration_ms=9
        )
        results.append(submitted.created)
        worker.label_ids.append(submitted.label.pk)

    run_in_threads(clicks, click)

    assert_no_errors(clicks)
    assert sorted(results) == [False] * 7 + [True]
    assert {pk for worker in clicks for pk in worker.label_ids} == {Label.objects.get().pk}
    entry = QueueEntry.objects.get(item_id=lease.item_id)
    assert (entry.labels_count, entry.open_leases) == (1, 0)
