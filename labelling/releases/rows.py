"""Which items a release holds and what each row says, read in one streamed, ordered query.

Rows come from one SQL statement (a server-side cursor on PostgreSQL), sorted by external id, so
that unchanged data gives the same bytes and the same sha256 whatever the database's whims.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from django.conf import settings
from django.db import connection

from labelling.models import (
    Consensus,
    Escalation,
    Item,
    Label,
    Prediction,
    Project,
    QueueEntry,
)
from labelling.services.decisions import DECIDED_STATES

ITEM, CONSENSUS, QUEUE = Item._meta.db_table, Consensus._meta.db_table, QueueEntry._meta.db_table
LABEL, PREDICTION = Label._meta.db_table, Prediction._meta.db_table
ESCALATION = Escalation._meta.db_table
# The data row's fields, in the order every format writes them (see CONTRACT.md).
FIELDS = (
    "external_id",
    "payload",
    "label",
    "label_source",
    "confidence",
    "n_labels",
    "agreement",
    "labellers",
    "model_version",
    "probabilities",
    "queued_reason",
    "source",
    "split",
    "item_created_at",
    "approved_at",
)
FETCH_ROWS = 5000


@dataclass(frozen=True)
class Filters:
    """Which decided items a release takes: all, or since the last release, a split, a source."""

    since_last: bool = False
    split: str | None = None
    source: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The filters as stored and shown."""
        return {"since_last": self.since_last, "split": self.split, "source": self.source}

    def same_selection(self) -> dict[str, Any]:
        """What makes two releases comparable for drift: the same split and source."""
        return {"split": self.split, "source": self.source}


@dataclass
class Selection:
    """The WHERE clause (on `i`) of a release's items, with its parameters."""

    where: str
    params: list[Any] = field(default_factory=list)


def _postgresql() -> bool:
    return connection.vendor == "postgresql"


def selection(project: Project, filters: Filters, watermark: dict[str, Any] | None) -> Selection:
    """The items a release with these filters takes, given the last release's watermark."""
    where = [
        "i.project_id = %s",
        f"i.state IN ('{DECIDED_STATES[0]}', '{DECIDED_STATES[1]}')",
        "i.deactivated_at IS NULL",
    ]
    params: list[Any] = [project.pk]
    for column in ("split", "source"):
        value = getattr(filters, column)
        if value is not None:
            where.append(f"i.{column} = %s")
            params.append(value)
    if filters.since_last and watermark:
        # Items whose decision changed at or after the last release's snapshot began: newly
        # approved or resolved, or given another label (services/decisions.py says why no
        # decision can slip between two releases). An item of the last release whose decision
        # has not changed since was decided before it, so it is not taken twice.
        where.append("i.decided_at >= %s")
        params.append(datetime.fromisoformat(watermark["at"]))
    return Selection(" AND ".join(where), params)


def between(chosen: Selection, low: str | None, high: str | None) -> Selection:
    """The selected items whose external id is at least `low` and below `high`, compared byte by
    byte (either bound left out: no bound)."""
    where, params = [chosen.where], list(chosen.params)
    for bound, operator in ((low, ">="), (high, "<")):
        if bound is not None:
            where.append(f"{bytewise('i.external_id')} {operator} %s")
            params.append(bound)
    return Selection(" AND ".join(where), params)


def watermark_at(at: datetime) -> dict[str, Any]:
    """Where the next "since the last release" starts from: this release's snapshot time."""
    return {"at": at.astimezone(UTC).isoformat()}


def count(chosen: Selection) -> int:
    """How many items the selection holds."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {ITEM} i WHERE {chosen.where}", chosen.params)
        return int(cursor.fetchone()[0])


def bytewise(column: str) -> str:
    """A text column compared byte by byte: the same order on every machine and database
    (locale collations differ between systems, and are several times slower to sort)."""
    return f'{column} COLLATE "C"' if _postgresql() else column


def label_source_sql() -> str:
    """Where a decided item's label comes from, as SQL on `i`: expert, gold or consensus.

    An expert's decision (Item.expert_label, set when an escalation is resolved) comes first:
    an item the expert also marked as gold is the expert's.
    """
    return (
        "CASE WHEN i.expert_label <> '' THEN 'expert' "
        "WHEN i.gold_label <> '' THEN 'gold' ELSE 'consensus' END"
    )


def final_label_sql() -> str:
    """The label a release gives, as SQL: the expert's decision, the gold answer, the consensus."""
    return (
        "CASE WHEN i.expert_label <> '' THEN i.expert_label "
        "WHEN i.gold_label <> '' THEN i.gold_label ELSE COALESCE(c.label, '') END"
    )


def approved_at_sql() -> str:
    """When the item was decided: the expert's resolution, else its last valid label, else the
    time its gold answer was set."""
    return (
        f"COALESCE(CASE WHEN i.state = '{Item.State.RESOLVED.value}' THEN e.resolved_at END, "
        "l.last_label_at, i.gold_set_at)"
    )


def from_sql(
    chosen: Selection, labellers: str | None = None, labellers_params: Sequence[Any] = ()
) -> tuple[str, list[Any]]:
    """The joins a release row reads, for the selected items; `labellers`, a subquery on the
    valid labels by item, joins as `l` (it gives the last label's time, `l.last_label_at`)."""
    labels = f"LEFT JOIN ({labellers}) l ON l.item_id = i.id" if labellers else ""
    sql = f"""
        FROM {ITEM} i
        LEFT JOIN {CONSENSUS} c ON c.item_id = i.id
        LEFT JOIN {QUEUE} q ON q.item_id = i.id
        LEFT JOIN {PREDICTION} p ON p.item_id = i.id AND p.model_version = COALESCE(
            q.model_version,
            (SELECT p2.model_version FROM {PREDICTION} p2 WHERE p2.item_id = i.id
             ORDER BY p2.created_at DESC, p2.id DESC LIMIT 1))
        LEFT JOIN (SELECT item_id, MAX(id) AS id FROM {ESCALATION}
                   WHERE project_id = %s AND resolved_at IS NOT NULL GROUP BY item_id) em
               ON em.item_id = i.id
        LEFT JOIN {ESCALATION} e ON e.id = em.id
        {labels}
        WHERE {chosen.where}
    """
    return sql, [chosen.params[0], *labellers_params, *chosen.params]


def _python_rows_sql(chosen: Selection) -> tuple[str, list[Any]]:
    agg = "string_agg(labeller_id::text, ',')" if _postgresql() else "group_concat(labeller_id)"
    labellers = (
        f"SELECT item_id, {agg} AS labellers, MAX(created_at) AS last_label_at FROM {LABEL} "
        "WHERE project_id = %s AND state = 'valid' GROUP BY item_id"
    )
    text = "::text" if _postgresql() else ""
    body, params = from_sql(chosen, labellers, [chosen.params[0]])
    sql = f"""
        SELECT i.external_id, i.payload{text}, {final_label_sql()}, {label_source_sql()},
               c.confidence, c.agreement, c.n_labels, q.rule, p.model_version,
               p.probabilities{text}, i.source, i.split, i.created_at, {approved_at_sql()},
               l.labellers
        {body} ORDER BY {bytewise("i.external_id")}
    """
    return sql, params


def label_counts(chosen: Selection) -> tuple[dict[str, int], dict[str, int]]:
    """Rows per final label and per label source, in one pass.

    Only the consensus is joined: the final label and its source read nothing else, and every
    other join of a release row gives at most one row per item (a queue entry and a consensus
    per item, one prediction per item and model version, the last resolved escalation).
    """
    sql = (
        f"SELECT {final_label_sql()}, {label_source_sql()}, COUNT(*) FROM {ITEM} i "
        f"LEFT JOIN {CONSENSUS} c ON c.item_id = i.id WHERE {chosen.where} GROUP BY 1, 2"
    )
    params = chosen.params
    classes: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        for label, source, n in cursor.fetchall():
            classes[label] += n
            sources[source] += n
    return dict(sorted(classes.items())), dict(sorted(sources.items()))


def raw_rows(chosen: Selection) -> Iterator[tuple[Any, ...]]:
    """The selected items' columns, streamed in external-id order (the Python writer's input)."""
    sql, params = _python_rows_sql(chosen)
    # A server-side (named) cursor on PostgreSQL: memory stays flat however large the release.
    cursor = connection.chunked_cursor() if _postgresql() else connection.cursor()
    try:
        cursor.execute(sql, params)
        while batch := cursor.fetchmany(FETCH_ROWS):
            yield from batch
    finally:
        cursor.close()


def iso(value: datetime | str | None) -> str | None:
    """A timestamp as ISO 8601 in UTC with microseconds, the same on every database."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Pseudonyms:
    """Labeller ids as stable per-project pseudonyms: an HMAC of the id with SECRET_KEY."""

    def __init__(self, project: Project) -> None:
        self.key = settings.SECRET_KEY.encode()
        self.project_id = project.pk
        self.known: dict[str, str] = {}

    def __call__(self, labeller_id: str) -> str:
        if labeller_id not in self.known:
            message = f"quorum-release:{self.project_id}:{labeller_id}".encode()
            self.known[labeller_id] = hmac.new(self.key, message, hashlib.sha256).hexdigest()[:16]
        return self.known[labeller_id]


@dataclass
class Row:
    """One data row, in FIELDS order."""

    data: dict[str, Any]


class RowBuilder:
    """Turns raw columns into data rows: labels chosen, labellers pseudonymised, JSON sorted."""

    def __init__(self, project: Project, omit: Sequence[str] = ()) -> None:
        self.labels = list(project.labels)
        self.pseudonym = Pseudonyms(project)
        self.omit = frozenset(omit)

    def _probabilities(self, raw: str | None) -> dict[str, float] | None:
        if raw is None:
            return None
        return dict(zip(self.labels, orjson.loads(raw), strict=False))

    def _labellers(self, raw: str | None) -> list[str]:
        return sorted(self.pseudonym(i) for i in raw.split(",")) if raw else []

    def __call__(self, raw: tuple[Any, ...]) -> Row:
        (external_id, payload_text, label, origin, confidence, agreement, n_labels, rule,
         model_version, probabilities, source, split, created_at, approved_at,
         labellers) = raw  # fmt: skip
        payload = orjson.loads(payload_text)
        if self.omit:
            payload = {k: v for k, v in payload.items() if k not in self.omit}
        data = {
            "external_id": external_id,
            "payload": orjson.Fragment(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)),
            "label": label,
            "label_source": origin,
            "confidence": confidence,
            "n_labels": n_labels or 0,
            "agreement": agreement,
            "labellers": self._labellers(labellers),
            "model_version": model_version,
            "probabilities": self._probabilities(probabilities),
            "queued_reason": rule,
            "source": source,
            "split": split,
            "item_created_at": iso(created_at),
            "approved_at": iso(approved_at),
        }
        return Row(data=data)
