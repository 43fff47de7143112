"""Which items a release holds and what each row says, read in one streamed, ordered query.

Rows come from one SQL statement (a server-side cursor on PostgreSQL), sorted by external id, so
that unchanged data gives the same bytes and the same sha256 whatever the database's whims.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
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

ITEM, CONSENSUS, QUEUE = Item._meta.db_table, Consensus._meta.db_table, QueueEntry._meta.db_table
LABEL, PREDICTION = Label._meta.db_table, Prediction._meta.db_table
ESCALATION = Escalation._meta.db_table
DECIDED_STATES = (Item.State.APPROVED.value, Item.State.RESOLVED.value)
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
        # New labels (by id, so that imported labels with old timestamps still count), new
        # expert decisions, or new gold answers since the last release.
        where.append(
            f"(i.id IN (SELECT item_id FROM {LABEL} WHERE project_id = %s AND id > %s) "
            f"OR i.id IN (SELECT item_id FROM {ESCALATION} WHERE project_id = %s "
            "AND resolved_at > %s) OR i.gold_set_at > %s)"
        )
        at = datetime.fromisoformat(watermark["at"])
        params += [project.pk, watermark["label_id"], project.pk, at, at]
    return Selection(" AND ".join(where), params)


def watermark_now(project: Project) -> dict[str, Any]:
    """Where "since the last release" will start from: the newest label id and the time now."""
    last = Label.objects.filter(project=project).order_by("-id").values_list("id", flat=True)
    return {"label_id": last.first() or 0, "at": datetime.now(UTC).isoformat()}


def count(chosen: Selection) -> int:
    """How many items the selection holds."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {ITEM} i WHERE {chosen.where}", chosen.params)
        return int(cursor.fetchone()[0])


def _labellers_sql() -> str:
    if _postgresql():
        return "string_agg(labeller_id::text, ',')"
    return "group_concat(labeller_id, ',')"


def _rows_sql(chosen: Selection) -> tuple[str, list[Any]]:
    text = "::text" if _postgresql() else ""
    sql = f"""
        SELECT i.external_id, i.payload{text}, i.content_hash, i.source, i.split, i.created_at,
               i.state, i.gold_label, i.gold_set_at,
               c.label, c.confidence, c.agreement, c.n_labels,
               q.rule, p.model_version, p.probabilities{text},
               e.resolution, e.resolved_at, l.labellers, l.last_label_at
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
        LEFT JOIN (SELECT item_id, {_labellers_sql()} AS labellers,
                          MAX(created_at) AS last_label_at
                   FROM {LABEL} WHERE project_id = %s AND state = 'valid' GROUP BY item_id) l
               ON l.item_id = i.id
        WHERE {chosen.where}
        ORDER BY i.external_id
    """
    project_id = chosen.params[0]
    return sql, [project_id, project_id, *chosen.params]


def raw_rows(chosen: Selection) -> Iterator[tuple[Any, ...]]:
    """The selected items' raw columns, streamed in external-id order."""
    sql, params = _rows_sql(chosen)
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


def label_source(state: str, gold_label: str) -> str:
    """Where a decided item's label comes from: gold, expert or consensus.

    Resolved items are the expert's; when the expert review lands its decision model this is the
    one place to follow it.
    """
    if gold_label:
        return "gold"
    return "expert" if state == Item.State.RESOLVED else "consensus"


def final_label(source: str, gold_label: str, resolution: str | None, consensus: str | None) -> str:
    """The label a release gives: the gold answer, the expert's decision, else the consensus."""
    if source == "gold":
        return gold_label
    if source == "expert" and resolution and resolution != "remove":
        return resolution
    return consensus or ""


@dataclass
class Row:
    """One data row (in FIELDS order) with what the checks need beside it."""

    data: dict[str, Any]
    payload: dict[str, Any]
    content_hash: str


class RowBuilder:
    """Turns raw columns into data rows: labels chosen, labellers pseudonymised, JSON sorted."""

    def __init__(self, project: Project) -> None:
        self.labels = list(project.labels)
        self.pseudonym = Pseudonyms(project)

    def _probabilities(self, raw: str | None) -> dict[str, float] | None:
        if raw is None:
            return None
        return dict(zip(self.labels, orjson.loads(raw), strict=False))

    def _labellers(self, raw: str | None) -> list[str]:
        return sorted(self.pseudonym(i) for i in raw.split(",")) if raw else []

    def __call__(self, raw: tuple[Any, ...]) -> Row:
        (external_id, payload_text, content_hash, source, split, created_at, state, gold_label,
         gold_set_at, c_label, confidence, agreement, n_labels, rule, model_version,
         probabilities, resolution, resolved_at, labellers, last_label_at) = raw  # fmt: skip
        payload = orjson.loads(payload_text)
        origin = label_source(state, gold_label)
        approved_at = resolved_at if origin == "expert" and resolved_at else last_label_at
        data = {
            "external_id": external_id,
            "payload": orjson.Fragment(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)),
            "label": final_label(origin, gold_label, resolution, c_label),
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
            "approved_at": iso(approved_at or gold_set_at),
        }
        return Row(data=data, payload=payload, content_hash=content_hash)
