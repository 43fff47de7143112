"""Release lines prepared ahead of a release, on PostgreSQL.

Building a line reads the item's consensus, queue entry, prediction, escalation and every valid
label: most of a large release's time. A decided item's line changes only when one of those
rows does, so the part after the external id and payload (the tail) is written ahead, in each
format, into PreparedLine, and a release reads it instead (labelling/releases/pgcopy.py); the
items without a line of the current key are built by the release as before, so a release gives
the same bytes either way, only sooner.

A line is never stale when read: triggers (migration 0016) delete an item's line in the same
statement that changes anything it was built from (labels, consensus, queue entry, predictions,
escalations, the item's own columns). That a line prepared from a snapshot cannot miss a change
committed meanwhile is what the project's lock in namespace LOCK_NAMESPACE is for: each
changing statement takes it shared, and the preparer holds it exclusively while it reads and
writes a chunk, so every change is either in what the chunk was built from or deletes the line
once the chunk is committed. The preparer only tries the lock (a waiting exclusive request
would queue labellers' writes behind it) and gives up for the moment after LOCK_SECONDS.

Lines are prepared in chunks after each consensus run and periodically (labelling/tasks.py), and
by `manage.py prepare_release_lines`.
"""

from __future__ import annotations

import logging
import time

from django.db import connection, transaction

from labelling.models import Project
from labelling.releases import pgcopy
from labelling.releases.rows import ITEM, Filters, Selection, selection

# Items a chunk prepares in one transaction, holding the project's lock: changes to the project
# wait for at most one chunk (tens of milliseconds).
CHUNK = 2000
LOCK_NAMESPACE = 7009
LOCK_SECONDS = 30.0
LOCK_POLL = 0.02
logger = logging.getLogger("quorum.releases")


def _locked(project: Project, deadline: float) -> bool:
    """Take the project's lines lock exclusively to the end of the transaction, trying until
    `deadline`; whether it was taken."""
    with connection.cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_try_advisory_xact_lock(%s, %s)", [LOCK_NAMESPACE, project.pk])
            if cursor.fetchone()[0]:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(LOCK_POLL)


def _chunk(project: Project, key: str, after: int, size: int) -> list[int]:
    """Prepare the lines of up to `size` decided items past id `after` that have none of `key`;
    the ids prepared (none: nothing was left)."""
    missing = pgcopy.unprepared(selection(project, Filters(), None), key)
    with connection.cursor() as cursor:
        pgcopy.release_settings(cursor)
        cursor.execute(
            f"SELECT i.id FROM {ITEM} i WHERE {missing.where} AND i.id > %s ORDER BY i.id LIMIT %s",
            [*missing.params, after, size],
        )
        ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            return ids
        chosen = Selection(f"{missing.where} AND i.id = ANY(%s)", [*missing.params, ids])
        tails, body, body_params = pgcopy._tails(project, chosen)
        columns = [tails[fmt] for fmt in pgcopy.FORMATS]
        cursor.execute(
            f"INSERT INTO {pgcopy.PREPARED} (item_id, key, {', '.join(pgcopy.FORMATS)}) "
            f"SELECT i.id, %s, {', '.join(sql for sql, _ in columns)} {body} "
            "ON CONFLICT (item_id) DO UPDATE SET key = EXCLUDED.key, "
            + ", ".join(f"{fmt} = EXCLUDED.{fmt}" for fmt in pgcopy.FORMATS),
            [key, *(p for _, params in columns for p in params), *body_params],
        )
    return ids


def lines_prepare(project: Project, *, chunk: int = CHUNK) -> int:
    """Prepare the lines of the project's decided items that have none for the current code and
    settings; how many were written. Nothing on SQLite (its releases are written in Python)."""
    if connection.vendor != "postgresql":
        return 0
    key = pgcopy.lines_key(project)
    written, after = 0, 0
    while True:
        with transaction.atomic():
            if not _locked(project, time.monotonic() + LOCK_SECONDS):
                logger.warning(
                    "release lines of %s: the project kept changing for %s s; the next run goes on",
                    project.slug,
                    LOCK_SECONDS,
                )
                return written
            ids = _chunk(project, key, after, chunk)
        if not ids:
            if written:
                lines_vacuum()
            return written
        written += len(ids)
        after = ids[-1]


def lines_vacuum() -> None:
    """VACUUM the lines' table after preparing them, outside any transaction: its visibility
    map lets a release find which items have lines from the index alone."""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM (ANALYZE) {pgcopy.PREPARED}")


def lines_prepare_all() -> int:
    """Prepare the missing lines of every project; how many were written."""
    return sum(lines_prepare(project) for project in Project.objects.order_by("pk"))
