"""Settling outside work by the labeller decisions: pay, refuse with feedback for the worker,
block clear spammers, bonuses, closing batches, and the periodic synchronisation of them all."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from core.exceptions import Conflict, InputError, InvalidInput, PlatformError
from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdBlock
from labelling.crowd.platforms import CrowdPlatform, platform_for
from labelling.crowd.services.publishing import _reward
from labelling.crowd.services.work import crowd_batch_sync
from labelling.models import Label, Labeller
from labelling.services.labellers import labeller_block

logger = logging.getLogger("quorum.crowd")


# Flags that make a rejected worker a clear spammer, blocked on the platform.
SPAM_FLAGS = frozenset({"random", "constant"})
PAY_FEEDBACK = "Thank you: your answer was accepted."
NO_ANSWER_FEEDBACK = (
    "We did not receive an answer we could read for this item, so we cannot pay for this "
    "assignment. If you believe this is a mistake, please contact us."
)
# Written for the worker, who sees it on the platform: what was wrong, without jargon.
REFUSE_FEEDBACK = {
    "random": "Your answers agreed with those of the other workers no more often than "
    "random guesses would, so we could not use them.",
    "constant": "You gave the same answer to nearly every item although the items differ, "
    "so we could not use your answers.",
    "low_gold_accuracy": "Many of your answers to check items, whose correct answers we know, "
    "were wrong, so we could not use your answers.",
}
REFUSE_DEFAULT = (
    "Your answers in this batch were reviewed and could not be used, so this assignment is "
    "not paid. Please read the instructions carefully in future tasks."
)
SETTLE_LOCK_SECONDS = 600
BLOCK_REASON = "Answers at random or always the same answer, across many assignments"


@dataclass
class SettleResult:
    """What settling a batch did, and the platform errors met on the way."""

    paid: int = 0
    refused: int = 0
    waiting: int = 0
    blocked: int = 0
    errors: list[str] = field(default_factory=list)


def _refusal(labeller: Labeller | None) -> str:
    flags = list(labeller.flags or []) if labeller is not None else []
    return next((REFUSE_FEEDBACK[f] for f in flags if f in REFUSE_FEEDBACK), REFUSE_DEFAULT)


def _decide(assignment: CrowdAssignment) -> tuple[str, str] | None:
    """Pay or refuse by the reliability decisions, with feedback; None for a paused labeller."""
    labeller, label = assignment.labeller, assignment.label
    if assignment.answer not in assignment.batch.project.labels:
        return CrowdAssignment.Decision.REFUSE, NO_ANSWER_FEEDBACK
    if labeller is not None and labeller.status == Labeller.Status.PAUSED:
        return None
    if label is not None and label.state == Label.State.VALID:
        return CrowdAssignment.Decision.PAY, PAY_FEEDBACK
    refused = (Labeller.Status.REJECTED, Labeller.Status.BLOCKED)
    if label is not None or (labeller is not None and labeller.status in refused):
        return CrowdAssignment.Decision.REFUSE, _refusal(labeller)
    # Honest work the label of which exists elsewhere (the worker answered the item before).
    return CrowdAssignment.Decision.PAY, PAY_FEEDBACK


def _apply(adapter: CrowdPlatform, assignment: CrowdAssignment, result: SettleResult) -> None:
    """Send a decision to the platform; a refusal there is kept on the row for the engineer."""
    pay = assignment.decision == CrowdAssignment.Decision.PAY
    try:
        done = adapter.pay(assignment=assignment) if pay else adapter.refuse(assignment=assignment)
    except PlatformError as exc:
        assignment.error = exc.message
        assignment.save(update_fields=["error"])
        result.errors.append(f"assignment {assignment.remote_id}: {exc.message}")
        return
    if done:
        _mark_applied(assignment)
    if pay:
        result.paid += 1
    else:
        result.refused += 1


def _mark_applied(assignment: CrowdAssignment) -> None:
    pay = assignment.decision == CrowdAssignment.Decision.PAY
    assignment.status = CrowdAssignment.Status.APPROVED if pay else CrowdAssignment.Status.REJECTED
    assignment.applied_at, assignment.error = timezone.now(), ""
    assignment.save(update_fields=["status", "applied_at", "error"])


@contextmanager
def _settling(batch: CrowdBatch) -> Iterator[None]:
    """One settlement of a batch at a time across processes (the beat task, the page's button),
    so that no decision is sent twice."""
    key = f"quorum:crowd-settle:{batch.pk}"
    if not cache.add(key, 1, timeout=SETTLE_LOCK_SECONDS):
        raise Conflict("this batch is being settled right now; try again in a minute")
    try:
        yield
    finally:
        cache.delete(key)


def crowd_batch_settle(*, batch: CrowdBatch, adapter: CrowdPlatform | None = None) -> SettleResult:
    """Pay or refuse every decided assignment of the batch and block its clear spammers."""
    with _settling(batch):
        return _settle(batch, adapter or platform_for(batch.platform))


def _settle(batch: CrowdBatch, adapter: CrowdPlatform) -> SettleResult:
    result = SettleResult()
    waiting = batch.assignments.filter(
        status=CrowdAssignment.Status.SUBMITTED, applied_at__isnull=True
    ).select_related("batch__project", "labeller", "label", "task")
    for assignment in waiting.order_by("id"):
        if assignment.decision and not adapter.reports_work:
            continue  # kept for the engineer to carry out on the platform's site
        if not assignment.decision:
            decided = _decide(assignment)
            if decided is None:
                result.waiting += 1
                continue
            assignment.decision, assignment.feedback = decided
            assignment.save(update_fields=["decision", "feedback"])
        _apply(adapter, assignment, result)
    result.blocked = _block_spammers(batch, adapter, result)
    return result


def _block_spammers(batch: CrowdBatch, adapter: CrowdPlatform, result: SettleResult) -> int:
    """Block, once, the batch's rejected workers flagged for random or constant answers."""
    blocked = 0
    rejected = Labeller.objects.filter(
        assignments__batch=batch, status=Labeller.Status.REJECTED
    ).distinct()
    for labeller in rejected:
        if not SPAM_FLAGS & set(labeller.flags or []):
            continue
        block, _ = CrowdBlock.objects.get_or_create(
            labeller=labeller,
            defaults={"project": batch.project, "platform": batch.platform,
                      "worker_id": labeller.worker_id, "reason": BLOCK_REASON},
        )  # fmt: skip
        if block.applied_at is None:
            blocked += _send_block(adapter, block, result)
    return blocked


def _send_block(adapter: CrowdPlatform, block: CrowdBlock, result: SettleResult) -> int:
    try:
        done = adapter.block(worker_id=block.worker_id, reason=block.reason)
    except PlatformError as exc:
        block.error = exc.message
        block.save(update_fields=["error"])
        result.errors.append(f"block of {block.worker_id}: {exc.message}")
        return 0
    if done:
        crowd_block_applied(block=block)
    return 1


@transaction.atomic
def crowd_block_applied(*, block: CrowdBlock) -> CrowdBlock:
    """Record that the worker is blocked on the platform; the labeller is blocked in Quorum too."""
    block.applied_at, block.error = block.applied_at or timezone.now(), ""
    block.save(update_fields=["applied_at", "error"])
    if block.labeller.status != Labeller.Status.BLOCKED:
        labeller_block(
            labeller=block.labeller, user=None, reason=f"{block.platform}: {block.reason}"
        )
    return block


@transaction.atomic
def crowd_decision_applied(*, assignment: CrowdAssignment) -> CrowdAssignment:
    """Record that the engineer carried out a pay or refuse decision on the platform."""
    if not assignment.decision:
        raise Conflict("nothing is decided for this assignment yet")
    if assignment.applied_at is None:
        _mark_applied(assignment)
    return assignment


def crowd_bonus_send(
    *, assignment: CrowdAssignment, amount: Any, reason: str,
    adapter: CrowdPlatform | None = None,
) -> bool:  # fmt: skip
    """Pay an assignment's worker a bonus, once; False: the engineer pays it on the platform."""
    adapter = adapter or platform_for(assignment.batch.platform)
    bonus = _reward(amount)
    if not reason.strip():
        raise InvalidInput("invalid bonus", errors=[InputError("is required", field="reason")])
    if assignment.bonus is not None:
        raise Conflict(f"this assignment already had a bonus of {assignment.bonus}")
    if assignment.status == CrowdAssignment.Status.RECEIVED:
        raise Conflict("the platform has not confirmed this assignment yet")
    done = adapter.bonus(assignment=assignment, amount=bonus, reason=reason.strip()[:1024])
    assignment.bonus = bonus
    assignment.save(update_fields=["bonus"])
    return done


def crowd_batch_close(*, batch: CrowdBatch, adapter: CrowdPlatform | None = None) -> SettleResult:
    """Settle the batch, stop offering its tasks, delete them where every assignment is decided."""
    adapter = adapter or platform_for(batch.platform)
    result = crowd_batch_settle(batch=batch, adapter=adapter)
    for task in batch.tasks.filter(published_at__isnull=False, expired_at__isnull=True):
        try:
            adapter.expire_task(task=task)
        except PlatformError as exc:
            result.errors.append(f"task {task.remote_id}: {exc.message}")
            continue
        task.expired_at = timezone.now()
        task.save(update_fields=["expired_at"])
    _delete_tasks(batch, adapter, result)
    batch.status, batch.closed_at = CrowdBatch.Status.CLOSED, batch.closed_at or timezone.now()
    batch.error = "; ".join(result.errors)[:5000]
    batch.save(update_fields=["status", "closed_at", "error"])
    return result


def _delete_tasks(batch: CrowdBatch, adapter: CrowdPlatform, result: SettleResult) -> None:
    undecided = Q(assignments__status=CrowdAssignment.Status.SUBMITTED)
    tasks = (
        batch.tasks.filter(expired_at__isnull=False, deleted_at__isnull=True)
        .annotate(undecided=Count("assignments", filter=undecided))
        .filter(undecided=0)
    )
    for task in tasks:
        try:
            adapter.delete_task(task=task)
        except PlatformError as exc:
            result.errors.append(f"task {task.remote_id}: {exc.message}")
            continue
        task.deleted_at = timezone.now()
        task.save(update_fields=["deleted_at"])


def crowd_sync_all() -> int:
    """Synchronise and settle every open batch, finish closing closed ones; return batches done.

    A platform's error is kept on its batch for the engineer, and the other batches go on.
    """
    done = 0
    live = Q(status=CrowdBatch.Status.OPEN) | Q(
        status=CrowdBatch.Status.CLOSED, tasks__deleted_at__isnull=True,
        tasks__published_at__isnull=False,
    )  # fmt: skip
    for batch in CrowdBatch.objects.filter(live).distinct().select_related("project"):
        try:
            adapter = platform_for(batch.platform)
            crowd_batch_sync(batch=batch, adapter=adapter)
            if batch.status == CrowdBatch.Status.CLOSED:
                result = crowd_batch_close(batch=batch, adapter=adapter)
            else:
                result = crowd_batch_settle(batch=batch, adapter=adapter)
            batch.error = "; ".join(result.errors)[:5000]
        except PlatformError as exc:
            batch.error = exc.message
        except Conflict:
            continue  # settled elsewhere at this moment: the next run takes it
        except Exception as exc:
            # One batch's failure is kept on it for the engineer; the other batches go on.
            logger.exception("crowd batch %s: synchronisation failed", batch.pk)
            batch.error = f"synchronisation failed: {exc}"[:5000]
        batch.save(update_fields=["error"])
        done += 1
    return done
