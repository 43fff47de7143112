"""Consensus: aggregate the valid labels of a project, decide each item's state, rate labellers.

The numbers come from labelling/numerics (Dawid-Skene with gold clamped, agreement, reliability);
this module loads the labels as arrays, applies the project's rules and stores the outcome.
Loading and storing are set-based so that a million labels take seconds: the labels arrive as
one value of packed integers on PostgreSQL, the per-item rules run on arrays, and the outcome goes
into a temporary table (COPY on PostgreSQL) from which one statement each writes the consensus
rows, item states, queue entries and escalations.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models import Count, Max, Q
from django.utils import timezone

from labelling.models import (
    Consensus,
    Escalation,
    Item,
    Label,
    Labeller,
    LabellerDecision,
    Prediction,
    Project,
    QueueEntry,
)
from labelling.numerics.aggregation import dawid_skene, label_counts
from labelling.numerics.agreement import agreement_summary, item_agreement
from labelling.numerics.priority import audit_draw, escalation_priority
from labelling.numerics.reliability import LabellerReliability, labeller_reliability
from labelling.services.debounce import recompute_soon, recompute_started
from labelling.services.decisions import decision_time
from labelling.services.evaluation import evaluation_schedule_after_commit
from labelling.services.floors import queue_reopened

logger = logging.getLogger("quorum.consensus")
LABEL, ITEM, QUEUE = Label._meta.db_table, Item._meta.db_table, QueueEntry._meta.db_table
CONSENSUS, ESCALATION = Consensus._meta.db_table, Escalation._meta.db_table
LABELLER = Labeller._meta.db_table
CHUNK = 5000
# States an expert has decided: aggregation never overrules them.
DECIDED = {Item.State.RESOLVED, Item.State.REMOVED}
# Labeller flags that pause a labeller until an engineer decides (documented default).
PAUSING_FLAGS = {"random", "constant", "low_gold_accuracy"}
# Item states as codes in arrays: 0 is blank (not in labelling yet), then the model's choices.
STATES = ("", *Item.State.values)
# One run's outcome in temporary tables of the connection: every labelled item, every labeller.
ITEMS_OUT = "quorum_consensus_items"
LABELLERS_OUT = "quorum_consensus_labellers"
# The size labelling/importing/staging.py gives temporary tables (see _temp_buffers).
TEMP_BUFFERS = "512MB"
# A label is stamped when its row is written but seen by a recomputation only once committed, and
# a recomputation is stamped when it stores its results: a label committed during a run can carry
# an older time than the run. The catch-up counts labels this much older than the last run as new.
CATCH_UP_MARGIN = timedelta(minutes=2)


@dataclass
class LabelArrays:
    """A project's valid labels as parallel code arrays, with the ids the codes stand for."""

    item_ids: np.ndarray
    labeller_ids: np.ndarray
    items: np.ndarray
    workers: np.ndarray
    labels: np.ndarray
    durations: np.ndarray

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    @property
    def n_workers(self) -> int:
        return int(self.labeller_ids.size)


class ItemFigures(Mapping[str, dict[str, Any]]):
    """The report's per-item part, built from arrays on first read: only --json reads it all."""

    def __init__(self, size: int, build: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self._size, self._build = size, build
        self._built: dict[str, dict[str, Any]] | None = None

    def _all(self) -> dict[str, dict[str, Any]]:
        if self._built is None:
            self._built = self._build()
        return self._built

    def __getitem__(self, external_id: str) -> dict[str, Any]:
        return self._all()[external_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return self._size


@dataclass
class AggregateReport:
    """What `aggregate --json` prints: items, labellers and agreement (see the contract)."""

    project: str
    method: str = "dawid-skene"
    items: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    labellers: dict[str, dict[str, Any]] = field(default_factory=dict)
    agreement: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "project": self.project,
            "method": self.method,
            "items": dict(self.items),
            "labellers": self.labellers,
            "agreement": self.agreement,
        }


@dataclass
class ItemFacts:
    """What the item table holds for the labelled items (by item code), and the queued others."""

    state: np.ndarray
    # 1 for a queue entry still collecting labels, 0 for one that has enough, -1 for none.
    collecting: np.ndarray
    # The labels the queue entry asks for (0 without one): an expert's send-back raises it.
    needed: np.ndarray
    # Known answers by item code: gold answers, and the expert's label of a resolved item.
    gold: dict[int, int]
    # Queued items without labels, in id order, and their states.
    waiting: np.ndarray
    waiting_state: np.ndarray


@dataclass
class ItemOutcome:
    """Per item code: the answer, its figures, and the state and escalation reason decided."""

    best: np.ndarray
    confidence: np.ndarray
    posterior: np.ndarray
    agreement: np.ndarray
    n_labels: np.ndarray
    state: np.ndarray
    reason: np.ndarray


class Stopwatch:
    """Seconds per phase, for the debug log."""

    def __init__(self) -> None:
        self.started = self.last = time.perf_counter()
        self.laps: list[str] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps.append(f"{name} {now - self.last:.2f}")
        self.last = now

    def __str__(self) -> str:
        return f"{time.perf_counter() - self.started:.2f} s ({', '.join(self.laps)})"


def _chunks(ids: list[int]) -> list[list[int]]:
    """Ids in slices small enough for any database's limit on query parameters."""
    return [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]


def _postgresql() -> bool:
    return connection.vendor == "postgresql"


def _integer_rows(sql: str, params: Sequence[Any], width: int) -> np.ndarray:
    """The rows of a query of `width` integer columns, none NULL, as an n x width int64 array.

    PostgreSQL packs them into one bytea of big-endian int8s (string_agg of int8send) and sends
    it through a binary COPY: one value to read instead of a Python tuple a row.
    """
    with connection.cursor() as cursor:
        if not _postgresql():
            cursor.execute(sql, params)
            return np.array(cursor.fetchall(), np.int64).reshape(-1, width)
        names = [f"c{i}" for i in range(width)]
        packed = " || ".join(f"int8send(r.{name}::bigint)" for name in names)
        query = f"SELECT string_agg({packed}, ''::bytea) FROM ({sql}) AS r({', '.join(names)})"
        with cursor.cursor.copy(f"COPY ({query}) TO STDOUT (FORMAT binary)", params) as copy:
            data = b"".join(copy)
    return np.frombuffer(_copied_value(data), ">i8").astype(np.int64).reshape(-1, width)


def _copied_value(data: bytes) -> memoryview:
    """The value of a binary COPY of one row and one column (empty for NULL)."""
    # Signature (11 bytes), flags (4), header extension (4 + its length), field count (2).
    start = 19 + int.from_bytes(data[15:19], "big") + 2
    size = int.from_bytes(data[start : start + 4], "big", signed=True)
    return memoryview(data)[start + 4 : start + 4 + max(size, 0)]


def _case(column: str, values: Sequence[str], default: int) -> tuple[str, list[str]]:
    """SQL mapping a text column to the position of its value in `values`, with its params."""
    whens = " ".join(f"WHEN %s THEN {code}" for code in range(len(values)))
    return f"CASE {column} {whens} ELSE {default} END", list(values)


def _load(project: Project) -> LabelArrays:
    """The project's valid labels as code arrays (one pass over the label table)."""
    code, params = _case("value", project.labels, -1)
    rows = _integer_rows(
        f"SELECT id, item_id, labeller_id, {code}, COALESCE(duration_ms, -1) FROM {LABEL} "
        "WHERE project_id = %s AND state = 'valid'",
        [*params, project.pk],
        5,
    )
    if rows.size and np.any(rows[1:, 0] < rows[:-1, 0]):
        rows = rows[np.argsort(rows[:, 0], kind="stable")]
    if np.any(rows[:, 3] < 0):
        raise ValueError(f"project {project.slug} has valid labels outside its label set")
    item_ids, items = np.unique(rows[:, 1], return_inverse=True)
    labeller_ids, workers = np.unique(rows[:, 2], return_inverse=True)
    return LabelArrays(
        item_ids=item_ids,
        labeller_ids=labeller_ids,
        items=items.astype(np.int64),
        workers=workers.astype(np.int64),
        labels=rows[:, 3].copy(),
        durations=np.where(rows[:, 4] < 0, np.nan, rows[:, 4].astype(float)),
    )


def _codes_of(item_ids: np.ndarray, pks: np.ndarray) -> np.ndarray:
    """Positions of `pks` in the sorted `item_ids`, or -1 for those not in it."""
    if not item_ids.size:
        return np.full(pks.size, -1, np.int64)
    at = np.minimum(np.searchsorted(item_ids, pks), item_ids.size - 1)
    return np.where(item_ids[at] == pks, at, -1)


def _item_codes(project: Project, where: str, params: Sequence[Any]) -> np.ndarray:
    """(id, state, queue entry, known answer, needed) codes of the items `where` picks (SQL on
    `i`). The known answer is the gold answer, else the expert's: both are clamped alike."""
    state, state_params = _case("i.state", STATES, 0)
    # -1 for no known answer, -2 for one outside the label set.
    known = "COALESCE(NULLIF(i.gold_label, ''), i.expert_label)"
    gold, gold_params = _case(known, ["", *project.labels], -1)
    return _integer_rows(
        f"SELECT i.id, {state}, CASE WHEN q.id IS NULL THEN -1 WHEN q.collecting THEN 1 ELSE 0 "
        f"END, {gold} - 1, COALESCE(q.needed, 0) FROM {ITEM} i "
        f"LEFT JOIN {QUEUE} q ON q.item_id = i.id WHERE {where}",
        [*state_params, *gold_params, *params],
        5,
    )


def _item_facts(project: Project, item_ids: np.ndarray) -> ItemFacts:
    """One read of the item table: the labelled items' facts and the queued items without labels."""
    rows = _item_codes(project, "i.project_id = %s AND (i.state <> '' OR q.id IS NOT NULL)",
                       [project.pk])  # fmt: skip
    # Labelled items are in labelling by the services' rules; the data may disagree.
    for condition, params in _id_sets(np.setdiff1d(item_ids, rows[:, 0]).tolist()):
        rows = np.concatenate([rows, _item_codes(project, f"i.id {condition}", params)])
    rows = rows[np.argsort(rows[:, 0])]
    codes = _codes_of(item_ids, rows[:, 0])
    labelled, waiting = rows[codes >= 0], rows[(codes < 0) & (rows[:, 2] >= 0)]
    if labelled.shape[0] != item_ids.size:
        raise Item.DoesNotExist(f"labelled items of project {project.slug} have disappeared")
    if np.any(labelled[:, 3] == -2):
        raise ValueError(f"project {project.slug} has gold answers outside its label set")
    gold = np.flatnonzero(labelled[:, 3] >= 0)
    return ItemFacts(
        state=np.array(STATES, dtype=object)[labelled[:, 1]],
        collecting=labelled[:, 2],
        needed=labelled[:, 4],
        gold=dict(zip(gold.tolist(), labelled[gold, 3].tolist(), strict=True)),
        waiting=waiting[:, 0],
        waiting_state=np.array(STATES, dtype=object)[waiting[:, 1]],
    )


def _item_state(
    project: Project, n: np.ndarray, confidence: np.ndarray, facts: ItemFacts
) -> tuple[np.ndarray, np.ndarray]:
    """(state, escalation reason) per item from its number of labels and confidence."""
    approved = (n >= project.overlap_min) & (confidence >= project.target_confidence)
    # No queue entry (labels imported for an audit) means no more labels will come either; an
    # item an expert sent back for another round waits for the labels it now needs.
    done = (n >= np.maximum(project.overlap_max, facts.needed)) | (facts.collecting != 1)
    # Not `>=`: a NaN confidence is not below the bar either (as in a scalar comparison).
    escalated = ~approved & done & (confidence < project.escalation_below_confidence)
    # The crowd's budget is spent and the answer is above the escalation bar: accept it.
    state = np.where(approved | done, Item.State.APPROVED.value, Item.State.COLLECTING.value)
    state = np.where(escalated, Item.State.ESCALATED.value, state).astype(object)
    return state, np.where(escalated, Escalation.Reason.LOW_CONFIDENCE.value, "").astype(object)


def _gold_state(
    project: Project, outcome: ItemOutcome, crowd_answer: np.ndarray, gold: dict[int, int]
) -> None:
    """A gold item's answer is known; the crowd contradicting it needs an expert's look."""
    at = np.fromiter(gold.keys(), np.int64, len(gold))
    answer = np.fromiter(gold.values(), np.int64, len(gold))
    conflict = (outcome.n_labels[at] >= project.overlap_min) & (crowd_answer[at] != answer)
    outcome.state[at] = np.where(conflict, Item.State.ESCALATED.value, Item.State.APPROVED.value)
    outcome.reason[at] = np.where(conflict, Escalation.Reason.GOLD_CONFLICT.value, "")


def _rounded(values: np.ndarray, digits: int = 6) -> np.ndarray:
    """Python's round(x, digits) for every element, exactly (numpy's can differ at a half)."""
    scaled = values * 10.0**digits
    rounded = np.round(values, digits)
    near_half = np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6
    rounded[near_half] = [round(float(v), digits) for v in values[near_half]]
    return rounded


def _audit_state(
    project: Project, item_ids: np.ndarray, outcome: ItemOutcome, gold: dict[int, int]
) -> None:
    """Send a fixed share of the auto-approved items to an expert for quality assurance.

    The draw is a hash of the item id, so recomputing consensus keeps the same sample.
    """
    if project.escalation_audit_fraction <= 0:
        return
    sampled = audit_draw(item_ids, project.pk) < project.escalation_audit_fraction
    known = np.zeros(item_ids.size, bool)
    known[list(gold)] = True
    audit = sampled & ~known & (outcome.state == Item.State.APPROVED.value)
    outcome.state[audit] = Item.State.ESCALATED.value
    outcome.reason[audit] = Escalation.Reason.AUDIT.value


def _outcome(
    project: Project,
    item_ids: np.ndarray,
    facts: ItemFacts,
    posterior: np.ndarray,
    counts: np.ndarray,
) -> ItemOutcome:
    """Apply the project's rules to every labelled item."""
    confidence = posterior.max(axis=1)
    n_labels = counts.sum(axis=1)
    state, reason = _item_state(project, n_labels, confidence, facts)
    outcome = ItemOutcome(
        best=posterior.argmax(axis=1), confidence=confidence, posterior=_rounded(posterior),
        agreement=item_agreement(counts), n_labels=n_labels, state=state, reason=reason,
    )  # fmt: skip
    _gold_state(project, outcome, counts.argmax(axis=1), facts.gold)
    _audit_state(project, item_ids, outcome, facts.gold)
    decided = np.isin(facts.state, list(DECIDED))
    outcome.state[decided], outcome.reason[decided] = facts.state[decided], ""
    return outcome


def _temp_buffers(cursor: CursorWrapper) -> None:
    """Size the session's temporary buffers as the prediction import does (PostgreSQL).

    8 MB by default, too few for a large project's outcome. The size is fixed at the session's
    first temporary table, after which PostgreSQL refuses any other value: with the import's
    value, whichever of the two runs first in a worker's session, the other's SET passes. A
    session whose buffers something else sized keeps them.
    """
    try:
        with transaction.atomic():
            cursor.execute(f"SET temp_buffers = '{TEMP_BUFFERS}'")
    except DatabaseError:
        pass


def _temp_table(
    cursor: CursorWrapper, name: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]
) -> None:
    """A fresh temporary table of this connection holding `rows` (COPY on PostgreSQL)."""
    if _postgresql():
        _temp_buffers(cursor)
    cursor.execute(f"DROP TABLE IF EXISTS {name}")
    cursor.execute(f"CREATE TEMPORARY TABLE {name} ({', '.join(columns)})")
    if not _postgresql():
        marks = ", ".join(["%s"] * len(columns))
        cursor.executemany(f"INSERT INTO {name} VALUES ({marks})", list(rows))
        return
    with cursor.cursor.copy(f"COPY {name} FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def _json_type() -> str:
    return "jsonb" if _postgresql() else "text"


def _outcome_rows(
    project: Project, arrays: LabelArrays, outcome: ItemOutcome
) -> Iterator[tuple[Any, ...]]:
    """One row a labelled item: the columns of ITEMS_OUT (priority only for escalations)."""
    # The posterior as json.dumps writes a list of floats (JSONField's own encoding).
    template = "[" + ", ".join(["%r"] * outcome.posterior.shape[1]) + "]"
    agreement = [None if a != a else a for a in outcome.agreement.tolist()]
    return zip(
        arrays.item_ids.tolist(), (project.labels[best] for best in outcome.best.tolist()),
        outcome.confidence.tolist(),
        (template % tuple(row) for row in outcome.posterior.tolist()), agreement,
        outcome.n_labels.tolist(), outcome.reason.tolist(),
        _priorities(project, arrays, outcome).tolist(), outcome.state.tolist(),
        strict=True,
    )  # fmt: skip


def _model_confidence(item_ids: list[int]) -> dict[int, float]:
    """The top probability of each item's latest prediction."""
    found: dict[int, float] = {}
    for chunk in _chunks(item_ids):
        rows = Prediction.objects.filter(item_id__in=chunk).order_by("item_id", "created_at", "id")
        found.update(rows.values_list("item_id", "confidence"))
    return found


def _priorities(project: Project, arrays: LabelArrays, outcome: ItemOutcome) -> np.ndarray:
    """The escalation priority of each item with an escalation reason (0 for the others)."""
    priority = np.zeros(arrays.n_items)
    at = np.flatnonzero(outcome.reason != "")
    if not at.size:
        return priority
    known = _model_confidence(arrays.item_ids[at].tolist())
    model = np.array([known.get(pk, np.nan) for pk in arrays.item_ids[at].tolist()])
    weights = project.escalation_harm_weights or {}
    harm = np.array([float(weights.get(label, 1.0)) for label in project.labels])
    priority[at] = escalation_priority(
        model, outcome.agreement[at], outcome.confidence[at], outcome.posterior[at], harm
    )
    return _rounded(priority)


def _write_consensus(cursor: CursorWrapper, now: Any) -> None:
    """Insert or update the Consensus row of every labelled item."""
    method = Consensus._meta.get_field("method").get_default()
    cursor.execute(
        f"INSERT INTO {CONSENSUS} (item_id, label, confidence, posterior, agreement, method, "
        f"n_labels, computed_at) SELECT t.item_id, t.label, t.confidence, t.posterior, "
        f"t.agreement, %s, t.n_labels, %s FROM {ITEMS_OUT} t WHERE true "
        "ORDER BY t.item_id ON CONFLICT (item_id) DO UPDATE SET label = excluded.label, "
        "confidence = excluded.confidence, posterior = excluded.posterior, "
        "agreement = excluded.agreement, n_labels = excluded.n_labels, "
        "computed_at = excluded.computed_at",
        [method, now],
    )


def _mark_relabelled(cursor: CursorWrapper, decided: Any) -> None:
    """Approved items that stay approved but whose release label, the consensus (no expert or
    gold answer comes first), changes: their decision changed now. Before the consensus is
    written, so that the old label is still there to compare with."""
    approved = Item.State.APPROVED.value
    cursor.execute(
        f"UPDATE {ITEM} SET decided_at = %s FROM {ITEMS_OUT} t "
        f"LEFT JOIN {CONSENSUS} c ON c.item_id = t.item_id "
        f"WHERE {ITEM}.id = t.item_id AND t.state = %s AND {ITEM}.state = %s "
        f"AND {ITEM}.expert_label = '' AND {ITEM}.gold_label = '' "
        "AND COALESCE(c.label, '') <> t.label",
        [decided, approved, approved],
    )


def _id_sets(ids: list[int]) -> Iterator[tuple[str, list[Any]]]:
    """SQL conditions on an id column, with their parameters, that together pick these ids.

    PostgreSQL takes them all as one array: for an UPDATE of a project's items it then goes
    through the primary key, where a join with a temporary table read the whole item table.
    Other databases take slices of CHUNK ids.
    """
    if ids and _postgresql():
        yield "= ANY(%s::bigint[])", ["{" + ",".join(map(str, ids)) + "}"]
    elif ids:
        for chunk in _chunks(ids):
            yield f"IN ({', '.join(['%s'] * len(chunk))})", chunk


def _write_states(
    cursor: CursorWrapper, project: Project, arrays: LabelArrays, facts: ItemFacts,
    outcome: ItemOutcome, decided_at: Any,
) -> None:  # fmt: skip
    """Write item states, and stop or restart collecting labels for queued items to match; an
    item becoming approved is decided at `decided_at`."""
    # Queue entries before items, the order in which leasing and answering write them, so that
    # a recomputation and a labeller's answer never wait on each other in a circle.
    queued = facts.collecting >= 0
    for collecting in (True, False):
        pks = arrays.item_ids[queued & ((outcome.state == "collecting") == collecting)].tolist()
        _write_entries(cursor, project, pks, collecting)
    decided = ", ".join(f"'{state}'" for state in sorted(DECIDED))
    # Only the items whose state changes: a recomputation after a few labels writes a few rows.
    changed = facts.state != outcome.state
    for state in np.unique(outcome.state[changed]).tolist():
        pks = arrays.item_ids[changed & (outcome.state == state)].tolist()
        approving = state == Item.State.APPROVED.value
        stamp = ", decided_at = %s" if approving else ""
        for condition, params in _id_sets(pks):
            cursor.execute(
                f"UPDATE {ITEM} SET state = %s{stamp} WHERE state NOT IN ({decided}) "
                f"AND state <> %s AND id {condition}",
                [state, *([decided_at] if approving else []), state, *params],
            )


def _write_entries(
    cursor: CursorWrapper, project: Project, item_ids: list[int], collecting: bool
) -> None:
    """Set the queue entries' `collecting` flag; still unsure: ask for one more label, up to max."""
    more = f"%s AND labels_count >= needed AND needed < {int(project.overlap_max)}"
    changed = 0
    for condition, params in _id_sets(item_ids):
        cursor.execute(
            f"UPDATE {QUEUE} SET collecting = %s, needed = CASE WHEN {more} "
            f"THEN labels_count + 1 ELSE needed END "
            f"WHERE (collecting <> %s OR ({more})) AND item_id {condition}",
            [collecting, collecting, collecting, collecting, *params],
        )
        changed += cursor.rowcount
    if collecting and changed:
        queue_reopened([project.pk])


def _open_escalations(cursor: CursorWrapper, project: Project, now: Any) -> None:
    """An open escalation for each newly escalated item (one open escalation an item at most);
    the ones already open take the new priority."""
    cursor.execute(
        f"UPDATE {ESCALATION} SET priority = t.priority FROM {ITEMS_OUT} t "
        f"WHERE {ESCALATION}.item_id = t.item_id AND t.reason <> '' "
        f"AND {ESCALATION}.resolved_at IS NULL AND {ESCALATION}.priority <> t.priority",
    )
    cursor.execute(
        f"INSERT INTO {ESCALATION} (project_id, item_id, reason, priority, created_at, "
        f"resolution, label, crowd_label, note) "
        f"SELECT %s, t.item_id, t.reason, t.priority, %s, '', '', '', '' "
        f"FROM {ITEMS_OUT} t WHERE t.reason <> '' AND NOT EXISTS (SELECT 1 FROM {ESCALATION} e "
        "WHERE e.project_id = %s AND e.item_id = t.item_id AND e.resolved_at IS NULL) "
        "ORDER BY t.item_id",
        [project.pk, now, project.pk],
    )


def _store_items(
    project: Project, arrays: LabelArrays, facts: ItemFacts, outcome: ItemOutcome
) -> ItemFigures:
    """Store consensus, states, queue flags and escalations; return the report's item part."""
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    decided = connection.ops.adapt_datetimefield_value(decision_time(project_id=project.pk))
    columns = [
        "item_id bigint", "label varchar(100)", "confidence double precision",
        f"posterior {_json_type()}", "agreement double precision", "n_labels integer",
        "reason varchar(30)", "priority double precision", "state varchar(20)",
    ]  # fmt: skip
    with connection.cursor() as cursor:
        _temp_table(cursor, ITEMS_OUT, columns, _outcome_rows(project, arrays, outcome))
        _mark_relabelled(cursor, decided)
        _write_consensus(cursor, now)
        _write_states(cursor, project, arrays, facts, outcome, decided)
        if np.any(outcome.reason != ""):
            _open_escalations(cursor, project, now)
        cursor.execute(f"DROP TABLE {ITEMS_OUT}")
    return _item_figures(project, arrays, facts, outcome)


def _external_ids(project: Project, ids: list[int]) -> list[str]:
    """The external ids of these items, in the same order."""
    # One pass over the project's items in labelling (a state or a queue entry, as for the
    # facts): cheaper than looking up a long list of ids, which PostgreSQL does by a full scan.
    in_labelling = Item.objects.filter(project=project).filter(
        ~Q(state="") | Q(queue_entry__isnull=False)
    )
    found = dict(in_labelling.values_list("pk", "external_id"))
    with connection.cursor() as cursor:
        for condition, params in _id_sets([pk for pk in ids if pk not in found]):
            cursor.execute(f"SELECT id, external_id FROM {ITEM} WHERE id {condition}", params)
            found.update(cursor.fetchall())
    return [found[pk] for pk in ids]


def _item_figures(
    project: Project, arrays: LabelArrays, facts: ItemFacts, outcome: ItemOutcome
) -> ItemFigures:
    """The report's per-item part, built when first read (external ids are fetched then)."""
    labels = project.labels

    def build() -> dict[str, dict[str, Any]]:
        names = _external_ids(project, [*arrays.item_ids.tolist(), *facts.waiting.tolist()])
        figures = {
            external_id: {"label": labels[best], "confidence": conf, "state": state, "n_labels": n}
            for external_id, best, conf, state, n in zip(
                names[: arrays.n_items], outcome.best.tolist(),
                _rounded(outcome.confidence).tolist(), outcome.state.tolist(),
                outcome.n_labels.tolist(), strict=True,
            )
        }  # fmt: skip
        # Queued items that have no labels yet are in the report too.
        for external_id, state in zip(names[arrays.n_items :], facts.waiting_state, strict=True):
            figures.setdefault(external_id, {
                "label": None, "confidence": None, "state": state or "queued", "n_labels": 0,
            })  # fmt: skip
        return figures

    return ItemFigures(arrays.n_items + facts.waiting.size, build)


def _enough_for_dawid_skene(arrays: LabelArrays) -> bool:
    """Whether labellers have given enough labels for their confusion matrices to mean much.

    With a handful of labels per labeller, Dawid-Skene's estimates feed on themselves and
    report near-certainty for a 2-1 vote; smoothed vote shares are the honest answer then.
    """
    per_labeller = np.bincount(arrays.workers, minlength=arrays.n_workers)
    return float(np.median(per_labeller)) >= settings.DAWID_SKENE_MIN_LABELS


def _smoothed_votes(counts: np.ndarray, gold: dict[int, int]) -> np.ndarray:
    """The posterior if every labeller were right with one assumed accuracy (equal-weight votes).

    With accuracy a over k classes, each vote multiplies its class's odds by a·(k−1)/(1−a):
    at a = 0.8, three agreeing votes of two classes give 0.985, a 2–1 split 0.8.
    """
    k = counts.shape[1]
    a = settings.ASSUMED_LABELLER_ACCURACY
    n = counts.sum(axis=1, keepdims=True)
    log_odds = counts * np.log(a) + (n - counts) * np.log((1.0 - a) / (k - 1))
    posterior = np.exp(log_odds - log_odds.max(axis=1, keepdims=True))
    posterior /= posterior.sum(axis=1, keepdims=True)
    for item, answer in gold.items():
        posterior[item] = np.eye(k)[answer]
    return posterior


@transaction.atomic
def consensus_compute(*, project: Project) -> AggregateReport:
    """Recompute consensus, item states and labeller reliability for a project, and store them."""
    Project.objects.select_for_update(no_key=True).get(pk=project.pk)
    watch = Stopwatch()
    report = AggregateReport(project=project.slug)
    arrays = _load(project)
    if arrays.labels.size == 0:
        return report
    watch.lap("labels")
    k = len(project.labels)
    sizes = (arrays.n_items, arrays.n_workers, k)
    facts = _item_facts(project, arrays.item_ids)
    gold = facts.gold
    counts = label_counts(arrays.items, arrays.labels, arrays.n_items, k)
    watch.lap("items")
    fit = None
    if _enough_for_dawid_skene(arrays):
        fit = dawid_skene(arrays.items, arrays.workers, arrays.labels, *sizes, gold=gold or None)
        posterior = fit.posterior
    else:
        report.method, posterior = "majority-vote", _smoothed_votes(counts, gold)
    watch.lap("fit")
    reliability = labeller_reliability(
        arrays.items, arrays.workers, arrays.labels, *sizes,
        model=fit, gold=gold or None, durations=arrays.durations,
    )  # fmt: skip
    report.agreement = agreement_summary(arrays.items, arrays.labels, arrays.n_items, k)
    watch.lap("reliability and agreement")
    outcome = _outcome(project, arrays.item_ids, facts, posterior, counts)
    watch.lap("rules")
    report.items = _store_items(project, arrays, facts, outcome)
    watch.lap("store items")
    _store_labellers(project, arrays, reliability, report)
    watch.lap("store labellers")
    logger.debug("aggregate %s: %d labels in %s", project.slug, arrays.labels.size, watch)
    # Approved items and expert decisions are trusted labels: the problems' figures follow them.
    evaluation_schedule_after_commit(project.pk)
    return report


def _nan_to_none(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def _labellers(pks: list[int]) -> dict[int, tuple[str, str]]:
    """(status, report name) of each labeller: worker id, else username, else id."""
    found: dict[int, tuple[str, str]] = {}
    for chunk in _chunks(pks):
        rows = Labeller.objects.filter(pk__in=chunk).values_list(
            "pk", "status", "worker_id", "user__username"
        )
        found.update((pk, (status, worker or user or str(pk))) for pk, status, worker, user in rows)
    return found


def _labeller_row(pk: int, code: int, reliability: LabellerReliability) -> dict[str, Any]:
    """A labeller's new figures, by Labeller field."""
    return {
        "id": pk,
        "n_labels": int(reliability.n_labels[code]),
        "accuracy": _nan_to_none(reliability.expected_accuracy[code]),
        "gold_accuracy": _nan_to_none(reliability.gold.accuracy[code]),
        "gold_answers": int(reliability.gold.n_gold[code]),
        "agreement": _nan_to_none(reliability.agreement.kappa[code]),
        "flags": reliability.flags_of(code),
    }


def _store_labellers(
    project: Project, arrays: LabelArrays, reliability: LabellerReliability,
    report: AggregateReport,
) -> None:  # fmt: skip
    """Store every labeller's figures and flags; pause the flagged ones."""
    known = _labellers(arrays.labeller_ids.tolist())
    rows: list[tuple[Any, ...]] = []
    paused: list[tuple[int, list[str]]] = []
    for code, pk in enumerate(arrays.labeller_ids.tolist()):
        status, name = known[pk]
        row = _labeller_row(pk, code, reliability)
        if status == Labeller.Status.ACTIVE and PAUSING_FLAGS & set(row["flags"]):
            status = Labeller.Status.PAUSED
            paused.append((pk, row["flags"]))
        rows.append((*row.values(), str(status)))
        report.labellers[name] = {
            "n_labels": row["n_labels"], "accuracy": row["accuracy"],
            "gold_accuracy": row["gold_accuracy"], "flags": row["flags"], "status": status,
        }  # fmt: skip
    _write_labellers(rows)
    LabellerDecision.objects.bulk_create(
        [
            LabellerDecision(
                labeller_id=pk, kind=LabellerDecision.Kind.PAUSE,
                reason=f"paused automatically, flagged {', '.join(flags)}; an engineer decides",
            )
            for pk, flags in paused
        ]
    )  # fmt: skip


def _write_labellers(rows: list[tuple[Any, ...]]) -> None:
    """Update the labellers from (id, n_labels, accuracy, …, flags, status) rows."""
    columns = [
        "id bigint", "n_labels integer", "accuracy double precision",
        "gold_accuracy double precision", "gold_answers integer", "agreement double precision",
        f"flags {_json_type()}", "status varchar(20)",
    ]  # fmt: skip
    # flags as JSONField writes them.
    rows = [(*row[:6], json.dumps(row[6]), row[7]) for row in rows]
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    fields = [column.split()[0] for column in columns[1:]]
    with connection.cursor() as cursor:
        _temp_table(cursor, LABELLERS_OUT, columns, rows)
        cursor.execute(
            f"UPDATE {LABELLER} SET {', '.join(f'{f} = t.{f}' for f in fields)}, "
            f"reliability_at = %s FROM {LABELLERS_OUT} t WHERE {LABELLER}.id = t.id",
            [now],
        )
        cursor.execute(f"DROP TABLE {LABELLERS_OUT}")


def state_counts(project: Project) -> dict[str, int]:
    """How many items are in each labelling state."""
    states = Item.objects.filter(project=project).exclude(state="").order_by().values_list("state")
    return dict(states.annotate(n=Count("pk")).values_list("state", "n"))


def consensus_schedule(*, project_id: int) -> None:
    """Ask for a recomputation soon: labels arriving in a burst cause one run per project.

    Called after a label is committed. With in-process jobs, a small project is recomputed at
    once; a large one waits for `aggregate`. A failed enqueue is logged, never raised: the label
    is saved, and the periodic catch-up recomputes the project later.
    """
    from labelling import tasks

    if settings.CELERY_TASK_ALWAYS_EAGER:
        if (
            Label.objects.filter(project_id=project_id).count()
            <= settings.INLINE_CONSENSUS_MAX_LABELS
        ):
            consensus_compute(project=Project.objects.get(pk=project_id))
        return
    recompute_soon(
        kind="consensus", project_id=project_id, task=tasks.aggregate_project,
        seconds=settings.CONSENSUS_DEBOUNCE_SECONDS,
    )  # fmt: skip


def consensus_run(*, project_id: int) -> None:
    """Run a scheduled recomputation (the Celery task's body)."""
    recompute_started(kind="consensus", project_id=project_id)
    project = Project.objects.filter(pk=project_id).first()
    if project is not None:
        consensus_compute(project=project)


def consensus_catch_up() -> int:
    """Schedule every project with labels newer than its last consensus; return how many."""
    stale = 0
    for project in Project.objects.all():
        last = Consensus.objects.filter(item__project=project).aggregate(at=Max("computed_at"))[
            "at"
        ]
        newer = Label.objects.filter(project=project)
        if last is not None:
            since = last - CATCH_UP_MARGIN
            newer = newer.filter(Q(created_at__gt=since) | Q(voided_at__gt=since))
        if newer.exists():
            consensus_schedule(project_id=project.pk)
            stale += 1
    return stale
