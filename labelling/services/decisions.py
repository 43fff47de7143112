"""When items are decided, in an order that "since the last release" can rely on.

An item's `decided_at` is set whenever its decision changes: it becomes approved or resolved, or
the label a release gives it (the expert's, the gold answer, the consensus) changes while it is.
A "since the last release" release takes the decided items whose `decided_at` is at or after the
previous release's `at`. That is exact only if every decision committed before a release's
snapshot has a time before its `at`, and every decision the snapshot cannot see has one after:

- on PostgreSQL a decision's time is read from the database clock under a shared advisory lock
  of the project, held until its transaction ends; a release takes the same lock exclusively for
  the instant in which it reads its `at` and starts its snapshot, so in-flight decisions finish
  first and later ones wait until the snapshot is taken;
- on SQLite one transaction writes at a time: a decision's time is read once its transaction
  holds the write lock, and a release reads its `at` holding it too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from django.db import connection
from django.utils import timezone

from core.exceptions import Conflict
from labelling.models import Item, Project

# The states a release takes items in.
DECIDED_STATES = (Item.State.APPROVED.value, Item.State.RESOLVED.value)
# Namespace of the advisory lock of a project's decisions (7007 numbers releases).
DECISIONS_NAMESPACE = 7008
PROJECT = Project._meta.db_table
# How long a release tries for the lock (decisions are short; a consensus run, seconds).
PAUSE_SECONDS = 300
PAUSE_POLL = 0.05


def _postgresql() -> bool:
    return connection.vendor == "postgresql"


def sqlite_write_lock(project_id: int) -> None:
    """Hold SQLite's write lock from here to the end of the transaction (BEGIN IMMEDIATE's
    effect, whatever mode the connection begins its transactions in)."""
    with connection.cursor() as cursor:
        # A write that changes nothing: SQLite takes the write lock for any UPDATE.
        cursor.execute(f"UPDATE {PROJECT} SET id = id WHERE id = %s", [project_id])


def decision_time(*, project_id: int) -> datetime:
    """The time to record as `decided_at` of decisions this transaction writes."""
    if not _postgresql():
        sqlite_write_lock(project_id)
        return timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock_shared(%s, %s), clock_timestamp()",
            [DECISIONS_NAMESPACE, project_id],
        )
        at: datetime = cursor.fetchone()[1]
    return at


def _lock_exclusively(project: Project) -> None:
    """Take the project's decision lock exclusively, as a session lock (before the snapshot's
    transaction begins).

    Tried rather than waited for: a waiting exclusive request would queue later shared ones
    behind it, and a decision holding the lock while it waits for a row another decision holds
    (one that has yet to take the lock) would then close a circle with the release.
    """
    deadline = time.monotonic() + PAUSE_SECONDS
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", [DECISIONS_NAMESPACE, project.pk])
            if cursor.fetchone()[0]:
                return
            if time.monotonic() > deadline:
                raise Conflict(
                    "decisions of this project kept being written for "
                    f"{PAUSE_SECONDS} s: run the release again"
                )
            time.sleep(PAUSE_POLL)


@contextlib.contextmanager
def decisions_paused(project: Project) -> Iterator[Any]:
    """Hold back the project's decisions while a release reads its `at` and starts its snapshot:
    call `resume()` (the value yielded) once the snapshot is taken; leaving resumes too."""
    if not _postgresql():
        yield lambda: None
        return
    held = True

    def resume() -> None:
        nonlocal held
        if held:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_advisory_unlock(%s, %s)", [DECISIONS_NAMESPACE, project.pk]
                )
            held = False

    _lock_exclusively(project)
    try:
        yield resume
    finally:
        resume()


def snapshot_time(project: Project) -> datetime:
    """The `at` of a release: the time its snapshot starts (inside decisions_paused, as the
    first statement of the release's transaction)."""
    if not _postgresql():
        sqlite_write_lock(project.pk)
        return timezone.now()
    with connection.cursor() as cursor:
        # The first query of a REPEATABLE READ transaction: it also takes the snapshot.
        cursor.execute("SELECT clock_timestamp()")
        at: datetime = cursor.fetchone()[0]
    return at
