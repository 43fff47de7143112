"""Crowd work: lending items to labellers, taking their answers, and the overlap rule.

Leasing is safe under concurrency: on PostgreSQL the next queue entry is taken with
`SELECT … FOR UPDATE SKIP LOCKED`, so concurrent labellers never wait on each other; on SQLite
every write transaction holds the database lock. Unique constraints (one open lease and one valid
label per item and labeller, never more labels than `needed`) are the last line of defence.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Collection
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User as AuthUser
from django.db import connection, transaction
from django.db.models import Count, F, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce, Greatest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from core import rows
from core.exceptions import Conflict, InputError, InvalidInput, NotFound
from core.permissions import Role, check_role
from labelling.models import (
    Item,
    Label,
    Labeller,
    Lease,
    Project,
    QueueEntry,
    QueueEpoch,
    QueueFloor,
)
from labelling.selectors import member_and_project, member_by_token_sql, member_from_row
from labelling.services.consensus import consensus_schedule
from labelling.services.decisions import DECISIONS_NAMESPACE, decision_time
from labelling.services.floors import queue_reopened

ITEM, ENTRY, LEASE, LABEL = (m._meta.db_table for m in (Item, QueueEntry, Lease, Label))
# Before a lease: (expired leases are due, the labeller's leases so far up to the warm-up, the id
# of their open lease).
Before = tuple[bool, int, int | None]


@dataclass(frozen=True)
class Submitted:
    """A recorded answer, and whether this call recorded it (False: a repeat of the same call)."""

    label: Label
    created: bool
    # From label_submit_at_once(then_next=True): the labeller, with their project, and the checks
    # before their next lease, read by the statement that stored the answer (lease_next_as_read).
    before_next: tuple[Labeller, Before] | None = None


def _lease_seconds() -> int:
    return int(settings.LEASE_SECONDS)


def _next_entry(project: Project, labeller: Labeller) -> tuple[int, int] | None:
    """(entry id, item id) of the most urgent queue entry still wanting a label this labeller
    has not given or skipped (SQLite: its write lock serialises leasing)."""
    with connection.cursor() as cursor:
        cursor.execute(_NEXT_ENTRY, [project.pk, labeller.pk])
        row = cursor.fetchone()
    return (row[0], row[1]) if row else None


# A queue entry this labeller may be given (`q` joined with its item `i`; parameter: the labeller),
# whether or not its overlap has room for one more lease.
_NOT_THEIRS = (
    "q.collecting AND i.gold_label = '' AND i.deactivated_at IS NULL AND NOT EXISTS (SELECT 1 FROM "
    f"{LEASE} l WHERE l.item_id = q.item_id AND l.labeller_id = %s AND l.state <> 'expired')"
)
_NEXT_ENTRY = (
    f"SELECT q.id, q.item_id FROM {ENTRY} q JOIN {ITEM} i ON i.id = q.item_id "
    f"WHERE q.project_id = %s AND q.labels_count + q.open_leases < q.needed AND {_NOT_THEIRS} "
    "ORDER BY q.priority LIMIT 1"
)
FLOOR, EPOCH = QueueFloor._meta.db_table, QueueEpoch._meta.db_table
# PostgreSQL: take the entry, count the lease against its overlap, mark the item as collecting,
# open the lease and move the labeller's floor (labelling/services/floors.py), in one statement;
# the leased item comes back for the answer. The search starts at the labeller's floor if its
# epoch is the project's, else at the top; the next floor is the first entry from there, other
# than the one taken, that is not theirs (or the one taken, if there is none).
# Parameters: project, labeller (floor), project, labeller, labeller (picked; the second for
# their status), project, labeller, now, expiry (the lease), project, labeller (the next floor),
# labeller (the floor's row).
_TAKE_ENTRY = (
    f"WITH epoch AS (SELECT COALESCE((SELECT value FROM {EPOCH} WHERE project_id = %s), 0) AS v), "
    f"start AS (SELECT COALESCE((SELECT f.priority FROM {FLOOR} f JOIN epoch ON f.epoch = epoch.v "
    f"WHERE f.labeller_id = %s), {-(2**63)}) AS priority), "
    f"picked AS (SELECT q.id, q.item_id, q.priority FROM {ENTRY} q JOIN {ITEM} i "
    "ON i.id = q.item_id WHERE q.project_id = %s AND q.priority >= (SELECT priority FROM start) "
    f"AND q.labels_count + q.open_leases < q.needed AND {_NOT_THEIRS} "
    # The labeller may take new work as this statement starts (their status was read before it).
    f"AND EXISTS (SELECT 1 FROM {Labeller._meta.db_table} w WHERE w.id = %s "
    f"AND w.status = '{Labeller.Status.ACTIVE.value}') "  # TAKES_NEW_WORK
    "ORDER BY q.priority LIMIT 1{lock}), "
    f"bumped AS (UPDATE {ENTRY} q SET open_leases = q.open_leases + 1 FROM picked "
    "WHERE q.id = picked.id RETURNING q.item_id), "
    f"marked AS (UPDATE {ITEM} SET state = 'collecting' WHERE id = (SELECT item_id FROM bumped) "
    "AND state = 'queued'), "
    f"opened AS (INSERT INTO {LEASE} (project_id, item_id, labeller_id, state, is_gold, "
    "created_at, expires_at) SELECT %s, item_id, %s, 'open', false, %s, %s FROM bumped "
    "RETURNING id, item_id, created_at, expires_at), "
    f"following AS (SELECT q.priority FROM {ENTRY} q JOIN {ITEM} i ON i.id = q.item_id "
    "WHERE q.project_id = %s AND q.priority >= (SELECT priority FROM start) "
    f"AND q.id <> (SELECT id FROM picked) AND {_NOT_THEIRS} ORDER BY q.priority LIMIT 1), "
    f"floored AS (INSERT INTO {FLOOR} (labeller_id, priority, epoch) SELECT %s, "
    "COALESCE((SELECT priority FROM following), picked.priority), (SELECT v FROM epoch) "
    "FROM picked ON CONFLICT (labeller_id) DO UPDATE "
    "SET priority = EXCLUDED.priority, epoch = EXCLUDED.epoch) "
    # A lease lost in a crash costs nothing (it is asked for again), so its commit need not wait
    # for the disk. Answers keep the default: a 201 means the label is on disk.
    "SELECT o.id, o.item_id, o.created_at, o.expires_at, i.external_id, i.payload, "
    "set_config('synchronous_commit', 'off', true) "
    f"FROM opened o JOIN {ITEM} i ON i.id = o.item_id"
)


# The take with locked entries skipped, then waiting for them (see _take_entry).
_TAKES = tuple(
    _TAKE_ENTRY.replace("{lock}", lock)
    for lock in (" FOR UPDATE OF q SKIP LOCKED", " FOR UPDATE OF q")
)


def _take_entry(project: Project, labeller: Labeller) -> Lease | None:
    """Lease the most urgent entry in one statement (PostgreSQL).

    Entries another transaction holds locked are skipped, so labellers never queue behind each
    other; if only locked entries are left, wait for them rather than answer "nothing left" to a
    labeller an item still wants (PostgreSQL checks the row again once it is unlocked).
    """
    now = timezone.now()
    expires = now + timedelta(seconds=_lease_seconds())
    project_id, labeller_id = project.pk, labeller.pk
    params: list[Any] = [
        project_id, labeller_id, project_id, labeller_id, labeller_id, project_id, labeller_id,
        now, expires, project_id, labeller_id, labeller_id,
    ]  # fmt: skip
    with rows.cursor() as cursor:
        for take in _TAKES:
            cursor.execute(take, params)
            row = cursor.fetchone()
            if row is not None:
                break
    if row is None:
        return None
    pk, item_id, created, expires_at, external_id, payload, _ = row
    lease = Lease(
        pk=pk, project=project, item_id=item_id, labeller=labeller, state=Lease.State.OPEN,
        is_gold=False, created_at=created, expires_at=expires_at,
    )  # fmt: skip
    if isinstance(payload, str):
        payload = json.loads(payload)
    lease.item = Item(pk=item_id, project=project, external_id=external_id, payload=payload)
    return lease


def _gold_item(project: Project, labeller: Labeller) -> Item | None:
    """A gold item this labeller has not seen, chosen at random among the first few hundred."""
    seen = Lease.objects.filter(labeller=labeller).values("item_id")
    candidates = list(
        Item.objects.filter(project=project, deactivated_at__isnull=True)
        .exclude(gold_label="")
        .exclude(pk__in=seen)
        .values_list("pk", flat=True)[:200]
    )
    return Item.objects.get(pk=random.choice(candidates)) if candidates else None


def _wants_gold(project: Project, leases_so_far: int) -> bool:
    """New labellers start with a few gold checks; after that, a gold_rate share of their work."""
    if leases_so_far < int(settings.NEW_LABELLER_GOLD):
        return True
    return random.random() < project.gold_rate


# Before every lease, in one read: are leases of the project past their expiry, how many leases
# has the labeller had (counted no further than the gold warm-up needs: a history can be long),
# and which lease do they hold open. The labeller is `m`; the parameters are (now, warm-up, now).
def _before_columns(other_than: str = "") -> str:
    """The checks before a lease, as columns of a read of the member `m` (parameters: now, the
    gold warm-up, now); `other_than` names a lease the open lease may not be."""
    besides = f" AND id <> {other_than}" if other_than else ""
    return (
        f"EXISTS (SELECT 1 FROM {LEASE} WHERE project_id = m.project_id AND state = 'open' "
        "AND expires_at <= %s), "
        f"(SELECT COUNT(*) FROM (SELECT 1 FROM {LEASE} WHERE labeller_id = m.id "
        "AND state <> 'expired' LIMIT %s) AS so_far), "
        f"(SELECT id FROM {LEASE} WHERE labeller_id = m.id AND state = 'open' AND expires_at > %s"
        f"{besides} ORDER BY created_at DESC, id DESC LIMIT 1)"
    )


_BEFORE_LEASE_COLUMNS = _before_columns()
_BEFORE_LEASE = f"SELECT {_BEFORE_LEASE_COLUMNS} FROM {Labeller._meta.db_table} m WHERE m.id = %s"
# The token's holder, their membership and the checks before their lease, in one read.
_MEMBER_BEFORE_LEASE = member_by_token_sql(", " + _BEFORE_LEASE_COLUMNS)
_MEMBER_BEFORE_LEASE_BY_ID = member_by_token_sql(", " + _BEFORE_LEASE_COLUMNS, by_id=True)


def _before_params(now: Any) -> list[Any]:
    return [now, max(int(settings.NEW_LABELLER_GOLD), 0), now]


def _before_lease(labeller: Labeller, now: Any) -> Before:
    """(expired leases are due, the labeller's leases so far up to the warm-up, open lease id)."""
    with rows.cursor() as cursor:
        cursor.execute(_BEFORE_LEASE, [*_before_params(now), labeller.pk])
        due, so_far, open_id = cursor.fetchone()
    return bool(due), int(so_far), open_id


def _postgres() -> bool:
    return connection.vendor == "postgresql"


def _open_lease(project: Project, labeller: Labeller, item_id: int, *, is_gold: bool) -> Lease:
    return Lease.objects.create(
        project=project,
        item_id=item_id,
        labeller=labeller,
        is_gold=is_gold,
        expires_at=timezone.now() + timedelta(seconds=_lease_seconds()),
    )


# A paused labeller finishes the item in hand (an engineer decides about their work later, as for
# outside workers) but takes no new one; a rejected or blocked labeller does no more work at all.
TAKES_NEW_WORK = frozenset({Labeller.Status.ACTIVE})
FINISHES_WORK = frozenset({Labeller.Status.ACTIVE, Labeller.Status.PAUSED})


def _check_may_work(labeller: Labeller, allowed: frozenset[Labeller.Status]) -> None:
    """Refuse a labeller whose status is not one of `allowed`, saying which it is."""
    if labeller.status not in allowed:
        raise Conflict(
            f"your work on this project is {labeller.status}; ask the project's engineer"
        )


def lease_next(*, project: Project, labeller: Labeller) -> Lease | None:
    """Lend the labeller their next item: a gold check at the gold rate, else the most urgent."""
    _check_may_work(labeller, TAKES_NEW_WORK)
    # On PostgreSQL each step is one statement and no step needs the others' snapshot (the
    # entry is taken under its row lock), so no transaction wraps them: that saves the BEGIN and
    # COMMIT round trips on every lease. On SQLite, the write lock taken at BEGIN serialises
    # leasing.
    with nullcontext() if _postgres() else transaction.atomic():
        now = timezone.now()
        return _lease_next(project, labeller, now, _before_lease(labeller, now))


def lease_next_by_token(
    *, key: str, project: str | int, roles: Collection[Role]
) -> tuple[Labeller, Lease | None] | None:
    """lease_next for the holder of an API token who is a member of the project (its slug, or
    its id) in one of `roles`, found in the same read as the checks before the lease; None when
    the token, the project or the role does not fit. On SQLite the read is inside the lease's
    transaction."""
    read = _MEMBER_BEFORE_LEASE_BY_ID if isinstance(project, int) else _MEMBER_BEFORE_LEASE
    with nullcontext() if _postgres() else transaction.atomic():
        now = timezone.now()
        with rows.cursor() as cursor:
            cursor.execute(read, [*_before_params(now), project, key])
            row = cursor.fetchone()
        member = None if row is None else member_from_row(row, roles)
        if row is None or member is None:
            return None
        _check_may_work(member, TAKES_NEW_WORK)
        return member, _lease_next(member.project, member, now, _before_from_row(row))


def _before_from_row(row: Any) -> Before:
    """The checks before a lease, from the last three columns of a read."""
    due, so_far, open_id = row[-3:]
    return bool(due), int(so_far), open_id


def lease_next_as_read(labeller: Labeller, before: Before, roles: Collection[Role]) -> Lease | None:
    """lease_next for a labeller in one of `roles`, with the labeller (and their project) and
    the checks before the lease as a statement already read them (label_submit_at_once with
    then_next). That statement may have waited on locks (answers to the same item) while the
    labeller was blocked or rejected, so their status is read again before anything but the take,
    which checks it itself."""
    check_role(Role(labeller.role), roles, "project")
    _check_may_work(labeller, TAKES_NEW_WORK)  # a blocked labeller's answer is refused anyway
    return _lease_next(labeller.project, labeller, timezone.now(), before, status_read=False)


def _check_still_working(labeller: Labeller) -> None:
    """Refuse a labeller whose status changed since it was read (see lease_next_as_read)."""
    now_status = Labeller.objects.filter(pk=labeller.pk).values_list("status", flat=True).first()
    labeller.status = now_status or Labeller.Status.BLOCKED
    _check_may_work(labeller, TAKES_NEW_WORK)


def _lease_next(
    project: Project, labeller: Labeller, now: Any, before: Before, *, status_read: bool = True
) -> Lease | None:
    """lease_next's steps: expiry, the open lease, a gold check, then the most urgent entry.
    Without `status_read` (the labeller's status may be stale), every step but the take, which
    checks it in its own statement, reads it again first."""
    due, so_far, open_id = before
    if due:
        _expire(_due(project, now), now)
    if open_id is not None:
        if not status_read:
            _check_still_working(labeller)
        # One item at a time: a reload of the page gets the same item back.
        lease = Lease.objects.select_related("item").get(pk=open_id)
        lease.project = project
        return lease
    if _wants_gold(project, so_far):
        if not status_read:
            _check_still_working(labeller)
        if (gold := _gold_item(project, labeller)) is not None:
            return _open_lease(project, labeller, gold.pk, is_gold=True)
    if _postgres():
        taken = _take_entry(project, labeller)
        if taken is None and not status_read:
            _check_still_working(labeller)  # nothing left, or no longer allowed to work
        return taken
    if not status_read:
        _check_still_working(labeller)
    found = _next_entry(project, labeller)
    if found is None:
        return None
    entry_id, item_id = found
    QueueEntry.objects.filter(pk=entry_id).update(open_leases=F("open_leases") + 1)
    Item.objects.filter(pk=item_id, state=Item.State.QUEUED).update(state=Item.State.COLLECTING)
    return _open_lease(project, labeller, item_id, is_gold=False)


def _lease_for(lease_id: int, user: Any) -> Lease:
    """The user's lease, locked, with its project and labeller; someone else's is not found, and
    a rejected or blocked labeller's lease takes no more work (an answer, undo, skip, heartbeat)."""
    # Only the lease row is locked: locking the joined project and labeller would queue every
    # answer of the project behind each other. SQLite's write lock at BEGIN serialises instead.
    lock = " FOR UPDATE OF l" if _postgres() else ""
    with connection.cursor() as cursor:
        cursor.execute(_LEASE_FOR + lock, [lease_id, int(user.pk or 0)])
        row = cursor.fetchone()
    if row is None:
        raise NotFound("lease not found")
    lease_end = rows.width(Lease)
    project_end = lease_end + rows.width(Project)
    lease = rows.instance(Lease, row[:lease_end])
    lease.project = rows.instance(Project, row[lease_end:project_end])
    lease.labeller = rows.instance(Labeller, row[project_end:])
    _check_may_work(lease.labeller, FINISHES_WORK)
    return lease


_LEASE_FOR = (
    f"SELECT {rows.columns(Lease, 'l')}, {rows.columns(Project, 'p')}, "
    f"{rows.columns(Labeller, 'm')} FROM {LEASE} l "
    f"JOIN {Project._meta.db_table} p ON p.id = l.project_id "
    f"JOIN {Labeller._meta.db_table} m ON m.id = l.labeller_id "
    "WHERE l.id = %s AND m.user_id = %s"
)


def _check_open(lease: Lease) -> None:
    if lease.state == Lease.State.EXPIRED or (
        lease.state == Lease.State.OPEN and lease.expires_at <= timezone.now()
    ):
        raise Conflict(
            "this lease has expired: the item went back to the queue; ask for the next one"
        )
    if lease.state != Lease.State.OPEN:
        raise Conflict(f"this lease is already {lease.state}")


def _release(lease: Lease) -> None:
    """Give back the lease's place in its item's overlap (gold checks hold none)."""
    if not lease.is_gold:
        QueueEntry.objects.filter(item_id=lease.item_id).update(open_leases=F("open_leases") - 1)


def _agreement(item_id: int) -> float:
    """The share of the item's valid labels that agree with the most common one."""
    values = Label.objects.filter(item_id=item_id, state=Label.State.VALID).values_list(
        "value", flat=True
    )
    counts = Counter(values)
    return max(counts.values()) / sum(counts.values()) if counts else 0.0


def _after_label(project: Project, item_id: int, counted: tuple[int, int, int] | None) -> None:
    """The overlap rule: ask for one more label while the labels disagree, up to overlap.max
    (_ANSWER_AT_ONCE applies the same rule in SQL: keep the two alike).

    `counted` is the item's queue entry (id, labels, labels needed) once the answer counts.
    """
    if counted is None or counted[1] < counted[2]:
        return
    entry_id, _, needed = counted
    agreement = _agreement(item_id)
    if agreement < project.target_confidence and needed < project.overlap_max:
        QueueEntry.objects.filter(pk=entry_id).update(needed=F("needed") + 1)
        return
    # Until consensus is computed from labeller reliability, agreement stands in for it.
    settled = agreement >= project.target_confidence
    QueueEntry.objects.filter(pk=entry_id).update(collecting=False)
    if settled:
        Item.objects.filter(pk=item_id).update(
            state=Item.State.APPROVED, decided_at=decision_time(project_id=project.pk)
        )
    else:
        Item.objects.filter(pk=item_id).update(state=Item.State.ESCALATED)


# The lease's place in the item's overlap becomes a label: one statement, one row lock.
_COUNT_ANSWER = (
    f"UPDATE {ENTRY} SET labels_count = labels_count + 1, open_leases = open_leases - 1 "
    "WHERE item_id = %s AND %s RETURNING id, labels_count, needed"
)


def _record_answer(lease: Lease, label: Label) -> tuple[int, int, int] | None:
    """Store the label, close the lease and count the answer against the item's overlap (gold
    checks hold no place in it); return the item's entry as the overlap rule reads it."""
    counts = not lease.is_gold
    lease.state, lease.closed_at = Lease.State.LABELLED, label.created_at
    if not _postgres():
        label.save(force_insert=True)
        lease.save(update_fields=["state", "closed_at"])
        with connection.cursor() as cursor:
            cursor.execute(_COUNT_ANSWER, [lease.item_id, counts])
            return cursor.fetchone()
    # PostgreSQL: the three writes in one statement.
    fields = [f for f in Label._meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(f.pre_save(label, True), connection) for f in fields]
    columns = ", ".join(connection.ops.quote_name(str(f.column)) for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH answer AS (INSERT INTO {LABEL} ({columns}) VALUES "
            f"({', '.join(['%s'] * len(fields))}) RETURNING id), "
            f"closed AS (UPDATE {LEASE} SET state = %s, closed_at = %s WHERE id = %s), "
            f"counted AS ({_COUNT_ANSWER}) "
            "SELECT answer.id, counted.* FROM answer LEFT JOIN counted ON true",
            [*values, lease.state, lease.closed_at, lease.pk, lease.item_id, counts],
        )
        label_id, *counted = cursor.fetchone()
    label.pk = label_id
    label._state.adding = False
    return None if counted[0] is None else (counted[0], counted[1], counted[2])


def _check_value(project: Project, value: Any) -> str:
    if not isinstance(value, str) or value not in project.labels:
        raise InvalidInput(
            "invalid label",
            errors=[
                InputError(
                    f"{value!r} is not one of the project's labels: {', '.join(project.labels)}",
                    field="label",
                )
            ],
        )
    return value


@transaction.atomic
def label_submit(
    *, lease_id: int, user: Any, value: Any, duration_ms: int | None, source: str = "web"
) -> Submitted:
    """Record the lease holder's answer; a repeat of the same call returns the first answer."""
    lease = _lease_for(lease_id, user)
    if lease.state == Lease.State.LABELLED:
        first = Label.objects.get(lease=lease)
        if first.value != value:
            raise Conflict(
                f"this item was already answered {first.value!r}; undo that answer to change it"
            )
        return Submitted(label=first, created=False)
    _check_open(lease)
    now = timezone.now()
    label = Label(
        project_id=lease.project_id,
        item_id=lease.item_id,
        labeller_id=lease.labeller_id,
        value=_check_value(lease.project, value),
        source=source,
        batch=f"lease-{now:%Y%m%d}",
        lease=lease,
        duration_ms=duration_ms,
        created_at=now,
    )
    _after_label(lease.project, lease.item_id, _record_answer(lease, label))
    project_id = lease.project_id
    transaction.on_commit(lambda: consensus_schedule(project_id=project_id))
    return Submitted(label=label, created=True)


# PostgreSQL: an answer in one statement, found by the token's holder, with no transaction
# around it: the lease is locked and checked (open, unexpired, its labeller still working, the
# label one of the project's), the answer counted, the label stored and the lease closed, and the
# statement's own commit waits for the disk. An answer that completes its item's overlap also
# runs the overlap rule (_after_label's, on the agreement of the item's labels with this one):
# one more label wanted, or the item no longer collecting and approved or escalated. That needs
# every counted label to be in the statement's snapshot, so it goes ahead only when the item's
# valid labels there are as many as its entry counts (a concurrent answer that committed after the
# snapshot makes them differ). Anything else (a repeat, an expired or someone else's lease, a bad
# label, counts that differ) it leaves untouched and returns no row: label_submit answers it.
# The overlap rule's three conditions, on the entry `q` as it was, the item's `tally` with this
# answer and the project in `held`: the answer completes the overlap; the labels disagree and
# the overlap may grow; the item is settled.
_COMPLETES = "q.labels_count + 1 >= q.needed"
_WANTS_MORE = "tally.agreement < held.target_confidence AND q.needed < held.overlap_max"
_SETTLED = "tally.agreement >= held.target_confidence"
_ANSWER_AT_ONCE = (
    "WITH held AS (SELECT l.id, l.project_id, l.item_id, l.labeller_id, l.is_gold, "
    "p.target_confidence, p.overlap_max "
    f"FROM {LEASE} l JOIN {Labeller._meta.db_table} m ON m.id = l.labeller_id "
    f"JOIN {Project._meta.db_table} p ON p.id = l.project_id "
    f"JOIN {Token._meta.db_table} t ON t.user_id = m.user_id "
    f"JOIN {AuthUser._meta.db_table} u ON u.id = t.user_id "
    "WHERE l.id = %s AND t.key = %s AND u.is_active AND l.state = 'open' AND l.expires_at > %s "
    "AND m.status = ANY(%s) AND p.labels ? %s FOR UPDATE OF l), "
    # The item's valid labels in this snapshot with this answer: how many before it, and the
    # share that agrees with the most common label.
    "votes AS (SELECT v.value, COUNT(*) AS n FROM (SELECT b.value FROM held "
    f"JOIN {LABEL} b ON b.item_id = held.item_id AND b.state = 'valid' "
    "UNION ALL SELECT %s) v GROUP BY v.value), "
    "tally AS (SELECT SUM(n) - 1 AS before, MAX(n)::float8 / SUM(n) AS agreement FROM votes), "
    f"counted AS (UPDATE {ENTRY} q SET labels_count = q.labels_count + 1, "
    "open_leases = q.open_leases - 1, "
    f"needed = CASE WHEN {_COMPLETES} AND {_WANTS_MORE} THEN q.needed + 1 ELSE q.needed END, "
    f"collecting = CASE WHEN {_COMPLETES} AND NOT ({_WANTS_MORE}) THEN false "
    "ELSE q.collecting END FROM held, tally WHERE q.item_id = held.item_id AND NOT held.is_gold "
    f"AND (NOT ({_COMPLETES}) OR (q.collecting AND q.labels_count = tally.before)) "
    "RETURNING q.id, q.labels_count >= q.needed AND NOT q.collecting AS closing), "
    "taken AS (SELECT * FROM held WHERE held.is_gold OR EXISTS (SELECT 1 FROM counted)), "
    f"answer AS (INSERT INTO {LABEL} (project_id, item_id, labeller_id, lease_id, value, source, "
    "batch, duration_ms, created_at, state, void_reason) SELECT project_id, item_id, labeller_id, "
    "id, %s, %s, %s, %s::integer, %s::timestamptz, 'valid', '' FROM taken "
    "RETURNING id, project_id, labeller_id, lease_id), "
    f"closed AS (UPDATE {LEASE} l SET state = 'labelled', closed_at = %s FROM taken "
    "WHERE l.id = taken.id), "
    # A decision's time is read under the project's shared decision lock, as decision_time does.
    f"stamp AS (SELECT pg_advisory_xact_lock_shared({DECISIONS_NAMESPACE}, "
    "held.project_id::integer), clock_timestamp() AS at FROM held), "
    f"decided AS (UPDATE {ITEM} i SET "
    f"state = CASE WHEN {_SETTLED} THEN 'approved' ELSE 'escalated' END, "
    f"decided_at = CASE WHEN {_SETTLED} THEN (SELECT at FROM stamp) ELSE i.decided_at END "
    "FROM held, tally, counted WHERE i.id = held.item_id AND counted.closing) "
    "SELECT id, project_id FROM answer"
)
# The same, also reading the labeller, their project and the checks before their next lease (the
# answered lease, still open in this statement's snapshot, is not their open lease).
_ANSWER_THEN_NEXT = _ANSWER_AT_ONCE.replace(
    "SELECT id, project_id FROM answer",
    f"SELECT a.id, a.project_id, {rows.columns(Labeller, 'm')}, {rows.columns(Project, 'p')}, "
    f"{_before_columns(other_than='a.lease_id')} FROM answer a "
    f"JOIN {Labeller._meta.db_table} m ON m.id = a.labeller_id "
    f"JOIN {Project._meta.db_table} p ON p.id = a.project_id",
)
assert _ANSWER_THEN_NEXT != _ANSWER_AT_ONCE, "the answer's last line changed: update the replace"


def label_submit_at_once(
    *,
    lease_id: int,
    token: str,
    value: str,
    duration_ms: int | None,
    source: str,
    then_next: bool = False,
) -> Submitted | None:
    """The answer of the API token's holder in one statement (PostgreSQL), or None when it is
    not the common case: label_submit then answers it, with every check and error message.
    With `then_next`, the same statement reads what their next lease needs (`before_next`)."""
    now = timezone.now()
    working = sorted(str(status) for status in FINISHES_WORK)
    batch = f"lease-{now:%Y%m%d}"
    params = [lease_id, token, now, working, value, value, value, source, batch, duration_ms]
    params += [now, now]
    if then_next:
        params += _before_params(now)
    with rows.cursor() as cursor:
        cursor.execute(_ANSWER_THEN_NEXT if then_next else _ANSWER_AT_ONCE, params)
        row = cursor.fetchone()
    if row is None:
        return None
    label_id, project_id = row[:2]
    before_next = None
    if then_next:
        before_next = (member_and_project(row[2:]), _before_from_row(row))
    label = Label(
        pk=label_id, project_id=project_id, lease_id=lease_id, value=value, source=source,
        batch=batch, duration_ms=duration_ms, created_at=now,
    )  # fmt: skip
    label._state.adding = False
    transaction.on_commit(lambda: consensus_schedule(project_id=project_id))
    return Submitted(label=label, created=True, before_next=before_next)


@transaction.atomic
def lease_skip(*, lease_id: int, user: Any) -> Lease:
    """Give the item back; it is not offered to this labeller again."""
    lease = _lease_for(lease_id, user)
    if lease.state == Lease.State.SKIPPED:
        return lease
    _check_open(lease)
    lease.state, lease.closed_at = Lease.State.SKIPPED, timezone.now()
    lease.save(update_fields=["state", "closed_at"])
    _release(lease)
    return lease


@transaction.atomic
def lease_renew(*, lease_id: int, user: Any) -> Lease:
    """Extend an open lease (a heartbeat from the labelling page)."""
    lease = _lease_for(lease_id, user)
    _check_open(lease)
    lease.expires_at = timezone.now() + timedelta(seconds=_lease_seconds())
    lease.save(update_fields=["expires_at"])
    return lease


@transaction.atomic
def label_undo(*, lease_id: int, user: Any) -> Lease:
    """Take back the last answer while the item is still this labeller's: the lease reopens."""
    lease = _lease_for(lease_id, user)
    if lease.state != Lease.State.LABELLED or lease.expires_at <= timezone.now():
        raise Conflict("only an answer whose lease has not expired can be undone")
    entry = QueueEntry.objects.filter(item_id=lease.item_id).first()
    if not lease.is_gold and entry is not None and not entry.collecting:
        raise Conflict("the item already has all its labels; the answer can no longer be undone")
    Label.objects.filter(lease=lease).update(
        state=Label.State.VOIDED,
        voided_at=timezone.now(),
        voided_by=user,
        void_reason="undone by the labeller",
        lease=None,
    )
    # The labeller is back on this item: give back the item they had moved on to, and let them
    # have the full lease time for the second answer.
    others = list(
        Lease.objects.select_for_update().filter(labeller=lease.labeller, state=Lease.State.OPEN)
    )
    for other in others:
        other.state, other.closed_at = Lease.State.EXPIRED, timezone.now()
        other.save(update_fields=["state", "closed_at"])
        _release(other)
    queue_reopened(other.project_id for other in others)
    lease.state, lease.closed_at = Lease.State.OPEN, None
    lease.expires_at = timezone.now() + timedelta(seconds=_lease_seconds())
    lease.save(update_fields=["state", "closed_at", "expires_at"])
    if not lease.is_gold:
        QueueEntry.objects.filter(item_id=lease.item_id).update(
            labels_count=F("labels_count") - 1, open_leases=F("open_leases") + 1
        )
    return lease


def _due(project: Project | None, now: Any) -> Any:
    """The open leases past their expiry (of one project, if given)."""
    due = Lease.objects.filter(state=Lease.State.OPEN, expires_at__lte=now)
    return due if project is None else due.filter(project=project)


def leases_expire(*, project: Project | None = None, now: Any = None) -> int:
    """Close the open leases past their expiry and give their items back; return how many."""
    now = now or timezone.now()
    due = _due(project, now)
    # Asked before every lease: nothing is due most of the time, and then one read is enough.
    if not due.exists():
        return 0
    return _expire(due, now)


def leases_withdraw(*, labeller: Labeller) -> int:
    """Close every open lease of a labeller who may no longer work, giving their items back."""
    held = Lease.objects.filter(labeller=labeller, state=Lease.State.OPEN)
    return _expire(held, timezone.now()) if held.exists() else 0


@transaction.atomic
def _expire(due: Any, now: Any) -> int:
    # Another request expiring the same leases holds their locks: skip them, it does the work.
    skip = connection.vendor == "postgresql"
    expired = list(
        due.select_for_update(skip_locked=skip).values_list(
            "pk", "item_id", "is_gold", "project_id"
        )
    )
    Lease.objects.filter(pk__in=[pk for pk, *_ in expired]).update(
        state=Lease.State.EXPIRED, closed_at=now
    )
    # Item order, as everywhere queue entries are written, so that two writers never deadlock.
    for item_id, n in sorted(Counter(item for _, item, gold, _ in expired if not gold).items()):
        QueueEntry.objects.filter(item_id=item_id).update(open_leases=F("open_leases") - n)
    # The labellers may have these items again, wherever their floors are.
    queue_reopened(project_id for *_, project_id in expired)
    return len(expired)


def _chunks(ids: list[int], size: int = 2000) -> list[list[int]]:
    return [ids[start : start + size] for start in range(0, len(ids), size)]


def entries_recount(*, item_ids: list[int]) -> None:
    """Bring the queue entries' label counts in line with their items' valid labels."""
    valid = (
        Label.objects.filter(item_id=OuterRef("item_id"), state=Label.State.VALID)
        .values("item_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    count = Coalesce(Subquery(valid), Value(0))
    for chunk in _chunks(item_ids):
        # One statement, so that the count never passes `needed` even for a moment.
        QueueEntry.objects.filter(item_id__in=chunk).update(
            labels_count=count, needed=Greatest(F("needed"), count)
        )


def entries_reopen(*, project: Project, item_ids: list[int]) -> int:
    """Send items whose labels were voided back to collecting; return how many were re-opened."""
    entries_recount(item_ids=item_ids)
    reopened = 0
    for chunk in _chunks(item_ids):
        reopened += (
            Item.objects.filter(pk__in=chunk)
            .exclude(state__in=[Item.State.RESOLVED, Item.State.REMOVED])
            .update(state=Item.State.COLLECTING)
        )
        QueueEntry.objects.filter(item_id__in=chunk).update(collecting=True)
    queue_reopened([project.pk] if item_ids else [])
    return reopened
