"""Consensus: aggregate the valid labels of a project, decide each item's state, rate labellers.

The numbers come from labelling/numerics (Dawid-Skene with gold clamped, agreement, reliability);
this module loads the labels as arrays, applies the project's rules and stores the outcome.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from labelling.models import (
    Consensus,
    Escalation,
    Item,
    Label,
    Labeller,
    LabellerDecision,
    Project,
    QueueEntry,
)
from labelling.numerics.aggregation import dawid_skene, label_counts
from labelling.numerics.agreement import agreement_summary, item_agreement
from labelling.numerics.reliability import labeller_reliability

logger = logging.getLogger("quorum.consensus")
LABEL, ITEM = Label._meta.db_table, Item._meta.db_table
CHUNK = 5000
# States an expert has decided: aggregation never overrules them.
DECIDED = {Item.State.RESOLVED, Item.State.REMOVED}
# Labeller flags that pause a labeller until an engineer decides (documented default).
PAUSING_FLAGS = {"random", "constant", "low_gold_accuracy"}


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


@dataclass
class AggregateReport:
    """What `aggregate --json` prints: items, labellers and agreement (see the contract)."""

    project: str
    method: str = "dawid-skene"
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    labellers: dict[str, dict[str, Any]] = field(default_factory=dict)
    agreement: dict[str, float | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "project": self.project,
            "method": self.method,
            "items": self.items,
            "labellers": self.labellers,
            "agreement": self.agreement,
        }


def _chunks(ids: list[int]) -> list[list[int]]:
    """Ids in slices small enough for any database's limit on query parameters."""
    return [ids[start : start + CHUNK] for start in range(0, len(ids), CHUNK)]


def _load(project: Project) -> LabelArrays:
    """The project's valid labels as code arrays (one pass over the label table)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT item_id, labeller_id, value, duration_ms FROM {LABEL} "
            f"WHERE project_id = %s AND state = 'valid' ORDER BY id",
            [project.pk],
        )
        rows = cursor.fetchall()
    codes = {label: k for k, label in enumerate(project.labels)}
    item_raw = np.fromiter((r[0] for r in rows), np.int64, len(rows))
    worker_raw = np.fromiter((r[1] for r in rows), np.int64, len(rows))
    item_ids, items = np.unique(item_raw, return_inverse=True)
    labeller_ids, workers = np.unique(worker_raw, return_inverse=True)
    return LabelArrays(
        item_ids=item_ids,
        labeller_ids=labeller_ids,
        items=items.astype(np.int64),
        workers=workers.astype(np.int64),
        labels=np.fromiter((codes[r[2]] for r in rows), np.int64, len(rows)),
        durations=np.fromiter((np.nan if r[3] is None else r[3] for r in rows), float, len(rows)),
    )


def _gold(project: Project, arrays: LabelArrays) -> dict[int, int]:
    """Gold answers as {item code: class code} for the labelled gold items."""
    position = {int(pk): i for i, pk in enumerate(arrays.item_ids)}
    codes = {label: k for k, label in enumerate(project.labels)}
    golds = Item.objects.filter(project=project).exclude(gold_label="")
    return {
        position[pk]: codes[label]
        for pk, label in golds.values_list("pk", "gold_label")
        if pk in position
    }


def _item_state(
    project: Project, n: int, confidence: float, collecting: bool | None
) -> tuple[str, str]:
    """(state, escalation reason) for an item from its number of labels and confidence."""
    if n >= project.overlap_min and confidence >= project.target_confidence:
        return Item.State.APPROVED, ""
    # No queue entry (labels imported for an audit) means no more labels will come either.
    done = n >= project.overlap_max or collecting is not True
    if done and confidence < project.escalation_below_confidence:
        return Item.State.ESCALATED, Escalation.Reason.LOW_CONFIDENCE
    if done:
        # The crowd's budget is spent and the answer is above the escalation bar: accept it.
        return Item.State.APPROVED, ""
    return Item.State.COLLECTING, ""


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
    Project.objects.select_for_update().get(pk=project.pk)
    started = time.perf_counter()
    report = AggregateReport(project=project.slug)
    arrays = _load(project)
    if arrays.labels.size == 0:
        return report
    k = len(project.labels)
    sizes = (arrays.n_items, arrays.n_workers, k)
    gold = _gold(project, arrays)
    counts = label_counts(arrays.items, arrays.labels, arrays.n_items, k)
    fit = None
    if _enough_for_dawid_skene(arrays):
        fit = dawid_skene(arrays.items, arrays.workers, arrays.labels, *sizes, gold=gold or None)
        posterior = fit.posterior
    else:
        report.method, posterior = "majority-vote", _smoothed_votes(counts, gold)
    reliability = labeller_reliability(
        arrays.items, arrays.workers, arrays.labels, *sizes,
        model=fit, gold=gold or None, durations=arrays.durations,
    )  # fmt: skip
    report.agreement = agreement_summary(arrays.items, arrays.labels, arrays.n_items, k)
    _store_items(project, arrays, posterior, counts, gold, report)
    _store_labellers(project, arrays, reliability, report)
    logger.debug("aggregate %s: %d labels in %.2f s", project.slug, arrays.labels.size,
                 time.perf_counter() - started)  # fmt: skip
    return report


def _store_items(
    project: Project,
    arrays: LabelArrays,
    posterior: np.ndarray,
    counts: np.ndarray,
    gold: dict[int, int],
    report: AggregateReport,
) -> None:
    now = timezone.now()
    best = posterior.argmax(axis=1)
    confidence = posterior.max(axis=1)
    agreement = item_agreement(counts)
    n_labels = counts.sum(axis=1)
    ids = arrays.item_ids.tolist()
    items = {
        pk: (external_id, state)
        for chunk in _chunks(ids)
        for pk, external_id, state in Item.objects.filter(pk__in=chunk).values_list(
            "pk", "external_id", "state"
        )
    }
    entries = {
        item_id: collecting
        for chunk in _chunks(ids)
        for item_id, collecting in QueueEntry.objects.filter(item_id__in=chunk).values_list(
            "item_id", "collecting"
        )
    }
    crowd_answer = counts.argmax(axis=1)
    states: dict[str, list[int]] = {}
    escalate: list[tuple[int, str, float]] = []
    rows: list[Consensus] = []
    for code, pk in enumerate(arrays.item_ids.tolist()):
        external_id, state = items[pk]
        label = project.labels[int(best[code])]
        n, conf = int(n_labels[code]), float(confidence[code])
        if state in DECIDED:
            new_state, reason = state, ""
        elif code in gold:
            # A gold item's answer is known; the crowd contradicting it needs an expert's look.
            conflict = n >= project.overlap_min and int(crowd_answer[code]) != gold[code]
            new_state = Item.State.ESCALATED if conflict else Item.State.APPROVED
            reason = Escalation.Reason.GOLD_CONFLICT if conflict else ""
        else:
            new_state, reason = _item_state(project, n, conf, entries.get(pk))
        states.setdefault(new_state, []).append(pk)
        if reason:
            escalate.append((pk, reason, 1.0 - conf))
        agree = float(agreement[code])
        rows.append(
            Consensus(
                item_id=pk, label=label, confidence=conf,
                posterior=[round(float(p), 6) for p in posterior[code]],
                agreement=None if np.isnan(agree) else agree,
                n_labels=n, computed_at=now,
            )
        )  # fmt: skip
        report.items[external_id] = {
            "label": label,
            "confidence": round(conf, 6),
            "state": new_state,
            "n_labels": n,
        }
    Consensus.objects.bulk_create(
        rows,
        batch_size=CHUNK,
        update_conflicts=True,
        unique_fields=["item"],
        update_fields=["label", "confidence", "posterior", "agreement", "n_labels", "computed_at"],
    )
    _store_states(project, states)
    _open_escalations(project, escalate)
    _queued_without_labels(project, report)


def _store_states(project: Project, states: dict[str, list[int]]) -> None:
    """Write item states, and stop or restart collecting labels for queued items to match."""
    for state, pks in states.items():
        for start in range(0, len(pks), CHUNK):
            chunk = pks[start : start + CHUNK]
            Item.objects.filter(pk__in=chunk).exclude(state__in=DECIDED).update(state=state)
            entries = QueueEntry.objects.filter(item_id__in=chunk)
            entries.update(collecting=state == Item.State.COLLECTING)
            if state == Item.State.COLLECTING:
                # Still unsure: ask for one more label, up to overlap.max.
                entries.filter(
                    labels_count__gte=F("needed"), needed__lt=project.overlap_max
                ).update(needed=F("labels_count") + 1)


def _open_escalations(project: Project, escalate: list[tuple[int, str, float]]) -> None:
    """An open escalation for each newly escalated item (one open escalation an item at most)."""
    already = set(
        Escalation.objects.filter(project=project, resolved_at__isnull=True).values_list(
            "item_id", flat=True
        )
    )
    Escalation.objects.bulk_create(
        [
            Escalation(project=project, item_id=pk, reason=reason, priority=priority)
            for pk, reason, priority in escalate
            if pk not in already
        ],
        batch_size=CHUNK,
    )


def _queued_without_labels(project: Project, report: AggregateReport) -> None:
    """Queued items that have no labels yet are in the report too."""
    waiting = Item.objects.filter(project=project, queue_entry__isnull=False).filter(
        ~Q(external_id__in=list(report.items)) if len(report.items) < 50_000 else Q()
    )
    for external_id, state in waiting.values_list("external_id", "state"):
        report.items.setdefault(
            external_id,
            {"label": None, "confidence": None, "state": state or "queued", "n_labels": 0},
        )


def _name(labeller: Labeller) -> str:
    return labeller.worker_id or (labeller.user.username if labeller.user else str(labeller.pk))


def _nan_to_none(value: float) -> float | None:
    return None if np.isnan(value) else round(float(value), 6)


def _store_labellers(
    project: Project, arrays: LabelArrays, reliability: Any, report: AggregateReport
) -> None:
    now = timezone.now()
    found = Labeller.objects.filter(pk__in=arrays.labeller_ids.tolist()).select_related("user")
    labellers = {labeller.pk: labeller for labeller in found}
    paused: list[Labeller] = []
    for code, pk in enumerate(arrays.labeller_ids.tolist()):
        labeller = labellers[pk]
        flags = reliability.flags_of(code)
        labeller.n_labels = int(reliability.n_labels[code])
        labeller.accuracy = _nan_to_none(reliability.expected_accuracy[code])
        labeller.gold_accuracy = _nan_to_none(reliability.gold.accuracy[code])
        labeller.gold_answers = int(reliability.gold.n_gold[code])
        labeller.agreement = _nan_to_none(reliability.agreement.kappa[code])
        labeller.flags, labeller.reliability_at = flags, now
        if labeller.status == Labeller.Status.ACTIVE and PAUSING_FLAGS & set(flags):
            labeller.status = Labeller.Status.PAUSED
            paused.append(labeller)
        report.labellers[_name(labeller)] = {
            "n_labels": labeller.n_labels,
            "accuracy": labeller.accuracy,
            "gold_accuracy": labeller.gold_accuracy,
            "flags": flags,
            "status": labeller.status,
        }
    Labeller.objects.bulk_update(
        labellers.values(),
        ["n_labels", "accuracy", "gold_accuracy", "gold_answers", "agreement", "flags",
         "reliability_at", "status"],
        batch_size=1000,
    )  # fmt: skip
    LabellerDecision.objects.bulk_create(
        [
            LabellerDecision(
                labeller=labeller, kind=LabellerDecision.Kind.PAUSE,
                reason=f"paused automatically, flagged {', '.join(labeller.flags)}; "
                "an engineer decides",
            )
            for labeller in paused
        ]
    )  # fmt: skip


def state_counts(project: Project) -> dict[str, int]:
    """How many items are in each labelling state."""
    states = Item.objects.filter(project=project).exclude(state="").values_list("state", flat=True)
    return dict(Counter(states))


def _debounce_key(project_id: int) -> str:
    return f"quorum:consensus-pending:{project_id}"


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
    if not cache.add(_debounce_key(project_id), 1, timeout=settings.CONSENSUS_DEBOUNCE_SECONDS * 6):
        return
    try:
        tasks.aggregate_project.apply_async(
            (project_id,), countdown=settings.CONSENSUS_DEBOUNCE_SECONDS
        )
    except Exception:
        cache.delete(_debounce_key(project_id))
        logger.exception(
            "could not schedule the consensus of project %s; catch-up will", project_id
        )


def consensus_run(*, project_id: int) -> None:
    """Run a scheduled recomputation (the Celery task's body)."""
    cache.delete(_debounce_key(project_id))
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
            newer = newer.filter(Q(created_at__gt=last) | Q(voided_at__gt=last))
        if newer.exists():
            consensus_schedule(project_id=project.pk)
            stale += 1
    return stale
