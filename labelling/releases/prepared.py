"""Release lines prepared ahead of a release, on PostgreSQL.

Building a line reads the item's consensus, queue entry, prediction, escalation and every valid
label: most of a large release's time. A decided item's line changes only when one of those
rows (or the item) does, so its whole line is written ahead in each format (one table a format,
PreparedJsonl, PreparedCsv, PreparedManifest), as a release that leaves the project's personal
fields out writes it (the default), and such a release reads it instead
(labelling/releases/pgcopy.py). The items without a line of the current key, and every item of
a release that keeps the personal fields, are built by the release as before, so a release gives
the same bytes either way, only sooner.

A line is never stale when read: triggers (migrations 0016 to 0019) delete an item's lines in
the same statement that changes anything they were built from (labels, consensus, queue entry,
predictions, escalations, the item's own columns, its payload included). That a line prepared
from a snapshot cannot miss a change committed meanwhile is what the project's lock in namespace
LOCK_NAMESPACE is for: each changing statement takes it shared, and the preparer holds it
exclusively while it reads and writes a chunk, so every change is either in what the chunk was
built from or deletes the lines once the chunk is committed. The preparer only tries the lock
(a waiting exclusive request would queue labellers' writes behind it) and gives up for the
moment after LOCK_SECONDS.

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
# wait for at most one chunk (about 0.1 s on a 2-core machine).
CHUNK = 500
LOCK_NAMESPACE = 7009
# Lines written in one go from which the tables are vacuumed at once (fewer: by autovacuum).
VACUUM_AFTER = 10_000
LOCK_SECONDS = 30.0
LOCK_POLL = 0.02
logger = logging.getLogger("quorum.releases")


def _locked(project: Project) -> bool:
    """Try to take, to the end of the transaction, the project's lines lock and the one of
    every project (key 0, taken shared by changes without a project of their own: predictions,
    consensus), both exclusively; whether both were taken (if not, end the transaction at once:
    it may hold one)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_try_advisory_xact_lock(%s, %s) AND pg_try_advisory_xact_lock(%s, 0)",
            [LOCK_NAMESPACE, project.pk, LOCK_NAMESPACE],
        )
        return bool(cursor.fetchone()[0])


def _missing() -> str:
    """SQL of the items among an array of ids that lack a line of a key in some format (its
    parameters: the ids, then the key once a format): a primary-key probe per item and table
    (a scalar subquery, never a hash of a whole table)."""
    lacking = " OR ".join(
        f"(SELECT r.key FROM {table} r WHERE r.item_id = w.id) IS DISTINCT FROM %s"
        for table in pgcopy.PREPARED.values()
    )
    return f"SELECT w.id FROM unnest(%s::bigint[]) w(id) WHERE {lacking} ORDER BY w.id"


def _chunk(project: Project, key: str, after: int, size: int) -> tuple[int | None, int]:
    """Prepare the lines of the decided items among the next `size` past id `after` that lack
    one of `key`: the last id looked at (None: there were none left) and how many were
    prepared."""
    decided = selection(project, Filters(), None)
    with connection.cursor() as cursor:
        pgcopy.release_settings(cursor)
        cursor.execute(
            f"SELECT i.id FROM {ITEM} i WHERE {decided.where} AND i.id > %s ORDER BY i.id LIMIT %s",
            [*decided.params, after, size],
        )
        window = [row[0] for row in cursor.fetchall()]
        if not window:
            return None, 0
        cursor.execute(_missing(), [window, *[key] * len(pgcopy.PREPARED)])
        ids = [row[0] for row in cursor.fetchall()]
        if not ids:
            return window[-1], 0
        chosen = Selection(f"{decided.where} AND i.id = ANY(%s)", [*decided.params, ids])
        heads = pgcopy.line_heads(pgcopy.prepared_omit(project))
        tails, body, body_params = pgcopy.line_tails(project, chosen)
        lines = ", ".join(f"{heads[f][0]} || {tails[f][0]} AS {f}" for f in pgcopy.FORMATS)
        # One pass over the rows, a line a format, into each format's table.
        writes = [
            f"INSERT INTO {pgcopy.PREPARED[f]} (item_id, key, line) SELECT id, %s, {f} FROM built "
            "ON CONFLICT (item_id) DO UPDATE SET key = EXCLUDED.key, line = EXCLUDED.line"
            for f in pgcopy.FORMATS
        ]
        line_params = [p for f in pgcopy.FORMATS for p in (*heads[f][1], *tails[f][1])]
        cursor.execute(
            f"WITH built AS (SELECT i.id, {lines} {body}), "
            + ", ".join(f"w{n} AS ({sql})" for n, sql in enumerate(writes[:-1]))
            + f" {writes[-1]}",
            [*line_params, *body_params, *[key] * len(writes)],
        )
    return window[-1], len(ids)


def lines_prepare(project: Project, *, chunk: int = CHUNK) -> int:
    """Prepare the lines of the project's decided items that have none for the current code and
    settings; how many items' lines were written. Nothing on SQLite (its releases are written in
    Python)."""
    if connection.vendor != "postgresql":
        return 0
    key = pgcopy.lines_key(project)
    written, after, last, count = 0, 0, None, 0
    deadline = time.monotonic() + LOCK_SECONDS
    while True:
        with transaction.atomic():
            locked = _locked(project)
            if locked:
                last, count = _chunk(project, key, after, chunk)
        if not locked:  # the transaction that tried has ended, and any lock it took with it
            if time.monotonic() > deadline:
                logger.warning(
                    "release lines of %s: the project kept changing for %s s; the next run goes on",
                    project.slug,
                    LOCK_SECONDS,
                )
                return written
            time.sleep(LOCK_POLL)
            continue
        deadline = time.monotonic() + LOCK_SECONDS
        written += count
        if last is None:
            if written >= VACUUM_AFTER:
                lines_vacuum()
            return written
        after = last


def lines_vacuum() -> None:
    """VACUUM the lines' tables after preparing many, outside any transaction: their visibility
    maps let a release find which items have lines from the indexes alone."""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            for table in pgcopy.PREPARED.values():
                cursor.execute(f"VACUUM (ANALYZE) {table}")


def lines_prepare_all() -> int:
    """Prepare the missing lines of every project; how many were written."""
    return sum(lines_prepare(project) for project in Project.objects.order_by("pk"))
