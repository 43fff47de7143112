"""Each labeller's starting point in the queue (PostgreSQL).

A lease looks, in priority order, for the most urgent entry the labeller has not labelled or
skipped. The entries they have answered stay in the queue while they wait for other labellers'
labels, and without a starting point every lease walked past all of them again: a labeller far
ahead of the crowd paid for each one on every lease.

So each labeller keeps a floor (`QueueFloor`): a priority above which (more urgent) every
collecting entry holds a lease of theirs that has not expired. The lease's search starts at the
floor, and the lease that takes an entry stores the next floor in the same statement. Entries that
stop collecting, leases taken or answered, new entries queued behind the rest: none of these can
put a wanted entry above a floor. What can is an entry queued ahead of the rest, an entry
collecting again, or a lease of the labeller's expiring; each of those calls `queue_reopened`,
which raises the project's queue epoch (`QueueEpoch`) once its transaction has committed, and a
floor counts only while its epoch is the project's: every floor of the project falls back to the
top of the queue and is found again on the labeller's next lease.

The epoch is raised after the commit, in a transaction of its own, and a lease reads the epoch in
the same snapshot as the entries it computes the floor from: a snapshot that sees the new epoch
sees the change too, so a floor is never stored with an epoch newer than its data. The periodic
lease expiry raises every epoch (`queue_epochs_raise`), so that an epoch missed (a process dying
between a commit and its raise) voids floors within one period.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction

from labelling.models import Project, QueueEpoch

EPOCH = QueueEpoch._meta.db_table

_RAISE = (
    f"INSERT INTO {EPOCH} (project_id, value) VALUES (%s, 1) "
    f"ON CONFLICT (project_id) DO UPDATE SET value = {EPOCH}.value + 1"
)


def queue_reopened(project_ids: Iterable[int]) -> None:
    """Entries of these projects may be wanted again above labellers' floors: once the current
    transaction commits (at once outside one), raise the projects' queue epochs."""
    ids = sorted(set(project_ids))
    if ids:
        transaction.on_commit(lambda: _raise(ids))


def _raise(project_ids: list[int]) -> None:
    # Its own short transaction, in project order: two raisers never wait on each other in a
    # circle, and no lease waits on a raise (leases only read the epoch).
    with transaction.atomic(), connection.cursor() as cursor:
        for project_id in project_ids:
            cursor.execute(_RAISE, [project_id])


# Every project's, those that never had one included (their floors carry epoch 0).
_RAISE_ALL = (
    f"INSERT INTO {EPOCH} (project_id, value) SELECT id, 1 FROM {Project._meta.db_table} "
    f"WHERE true ON CONFLICT (project_id) DO UPDATE SET value = {EPOCH}.value + 1"
)


def queue_epochs_raise() -> int:
    """Raise every project's queue epoch (the periodic safety net); return how many."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_RAISE_ALL)
        return int(cursor.rowcount)
