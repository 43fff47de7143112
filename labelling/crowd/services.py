"""The outside-crowd workflow, the same for every platform: publish a batch, record the work that
comes back as labels, settle it (pay, refuse, block clear spammers) by the reliability decisions,
and close the batch. Platform calls happen outside database transactions; every step can be run
again after a failure without doing anything twice.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from core.exceptions import Conflict, InputError, InvalidInput, NotFound, PlatformError
from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdBlock, CrowdTask
from labelling.crowd.platforms import CENT, CrowdPlatform, Submission, platform_for
from labelling.models import Item, Label, Labeller, Project, QueueEntry
from labelling.services.consensus import consensus_schedule
from labelling.services.labellers import labeller_block
from labelling.services.leasing import entries_recount

logger = logging.getLogger("quorum.crowd")

MAX_BATCH = 5000
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
SYNC_CHUNK = 200
BLOCK_REASON = "Answers at random or always the same answer, across many assignments"


@dataclass(frozen=True)
class CostEstimate:
    """What a batch would cost: workers' pay and the platform's fees."""

    items: int
    assignments: int
    reward: Decimal
    fee: Decimal

    @property
    def paid_assignments(self) -> int:
        return self.items * self.assignments

    @property
    def workers_pay(self) -> Decimal:
        return self.reward * self.paid_assignments

    @property
    def fees(self) -> Decimal:
        return self.fee * self.paid_assignments

    @property
    def total(self) -> Decimal:
        return self.workers_pay + self.fees


@dataclass
class SettleResult:
    """What settling a batch did, and the platform errors met on the way."""

    paid: int = 0
    refused: int = 0
    waiting: int = 0
    blocked: int = 0
    errors: list[str] = field(default_factory=list)


def crowd_options(project: Project) -> dict[str, Any]:
    """The project's crowd settings with every default filled in."""
    from labelling.spec import DEFAULTS

    options = {**DEFAULTS["crowd"], **(project.crowd or {})}
    options["title"] = options["title"] or f"Label: {project.name}"[:128]
    options["description"] = (
        options["description"]
        or (f"Choose the right label ({', '.join(project.labels)}) for one item.")[:2000]
    )
    options["assignments"] = options["assignments"] or project.overlap_min
    return options


def _reward(value: Any) -> Decimal:
    try:
        reward = Decimal(str(value)).quantize(CENT)
    except (InvalidOperation, ValueError):
        reward = Decimal(-1)
    if not Decimal("0.01") <= reward <= Decimal("100"):
        raise InvalidInput(
            "invalid batch", errors=[InputError("must be between 0.01 and 100", field="reward")]
        )
    return reward


def _whole(value: Any, name: str, high: int) -> int:
    if isinstance(value, bool) or not str(value).strip().isdigit() or not 1 <= int(value) <= high:
        raise InvalidInput(
            "invalid batch", errors=[InputError(f"must be a whole number 1–{high}", field=name)]
        )
    return int(value)


def crowd_items_available(project: Project) -> Any:
    """Queued items still collecting labels that no unclosed batch holds (gold items stay home)."""
    busy = CrowdTask.objects.filter(
        batch__project=project,
        batch__status__in=[CrowdBatch.Status.PUBLISHING, CrowdBatch.Status.OPEN],
    ).values("item_id")
    return (
        QueueEntry.objects.filter(project=project, collecting=True)
        .filter(item__gold_label="", item__deactivated_at__isnull=True)
        .exclude(item_id__in=busy)
        .order_by("priority", "id")
        .values_list("item_id", flat=True)
    )


def crowd_estimate(
    *, project: Project, platform: str, size: Any, reward: Any, assignments: Any
) -> CostEstimate:
    """The cost of publishing `size` items: reward × assignments, plus the platform's fees."""
    adapter = platform_for(platform)
    if problem := adapter.problem():
        raise InvalidInput(
            f"{adapter.title} cannot be used yet", errors=[InputError(problem, field="platform")]
        )
    reward = _reward(reward)
    assignments = _whole(assignments, "assignments", 50)
    size = _whole(size, "size", MAX_BATCH)
    items = min(size, crowd_items_available(project).count())
    if items == 0:
        raise InvalidInput(
            "nothing to publish",
            errors=[
                InputError("no queued item is waiting for labels outside a batch", field="size")
            ],
        )
    fee = adapter.fee(reward=reward, assignments=assignments)
    return CostEstimate(items=items, assignments=assignments, reward=reward, fee=fee)


@transaction.atomic
def crowd_batch_create(
    *, project: Project, platform: str, size: Any, reward: Any, assignments: Any, user: Any
) -> CrowdBatch:
    """Set a batch of the most urgent available items aside for a platform (not yet published)."""
    Project.objects.select_for_update(no_key=True).get(pk=project.pk)
    estimate = crowd_estimate(
        project=project, platform=platform, size=size, reward=reward, assignments=assignments
    )
    options = crowd_options(project)
    batch = CrowdBatch.objects.create(
        project=project,
        platform=platform,
        token=secrets.token_hex(16),
        reward=estimate.reward,
        assignments_per_item=estimate.assignments,
        options={k: v for k, v in options.items() if k not in {"reward", "assignments"}},
        cost_estimate=estimate.total,
        completion_code=secrets.token_hex(4).upper(),
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )
    item_ids = list(crowd_items_available(project)[: estimate.items])
    CrowdTask.objects.bulk_create([CrowdTask(batch=batch, item_id=pk) for pk in item_ids])
    return batch


def crowd_batch_publish(*, batch: CrowdBatch, adapter: CrowdPlatform | None = None) -> CrowdBatch:
    """Publish a batch on its platform, or finish publishing it after a failure."""
    adapter = adapter or platform_for(batch.platform)
    if batch.status not in (CrowdBatch.Status.PUBLISHING, CrowdBatch.Status.FAILED):
        raise Conflict(f"the batch is already {batch.status}")
    try:
        if not batch.remote_id:
            batch.remote_id = adapter.publish_batch(batch=batch)
            batch.save(update_fields=["remote_id"])
        for task in batch.tasks.filter(published_at__isnull=True).order_by("id"):
            task.remote_id = adapter.publish_task(batch=batch, task=task)
            task.published_at = timezone.now()
            task.save(update_fields=["remote_id", "published_at"])
    except PlatformError as exc:
        batch.status, batch.error = CrowdBatch.Status.FAILED, exc.message
        batch.save(update_fields=["status", "error"])
        raise
    batch.status, batch.error = CrowdBatch.Status.OPEN, ""
    batch.save(update_fields=["status", "error"])
    return batch


def _labeller(project: Project, platform: str, worker_id: str) -> Labeller:
    """The outside labeller for (platform, worker id), created on their first answer."""
    labeller, _ = Labeller.objects.get_or_create(
        project=project, platform=platform, worker_id=worker_id
    )
    return labeller


def _give_label(assignment: CrowdAssignment, *, labelled: list[int] | None) -> None:
    """Turn a confirmed answer into a label of the worker's labeller (once); with `labelled`,
    only note the item there for the caller to bring up to date with the others."""
    labeller = assignment.labeller
    batch, item_id = assignment.batch, assignment.task.item_id
    if labeller is None or assignment.label_id is not None:
        return
    if assignment.answer not in batch.project.labels:
        return
    if labeller.status in (Labeller.Status.REJECTED, Labeller.Status.BLOCKED):
        return
    if Label.objects.filter(item_id=item_id, labeller=labeller, state=Label.State.VALID).exists():
        return
    assignment.label = Label.objects.create(
        project=batch.project,
        item_id=item_id,
        labeller=labeller,
        value=assignment.answer,
        source=batch.platform,
        batch=batch.name,
        duration_ms=assignment.duration_ms,
    )
    if labelled is not None:
        labelled.append(item_id)
        return
    _items_labelled([item_id])
    project_id = batch.project_id
    transaction.on_commit(lambda: consensus_schedule(project_id=project_id))


def _items_labelled(item_ids: list[int]) -> None:
    """Queue entries count the new labels; items not yet in labelling are now collecting."""
    entries_recount(item_ids=item_ids)
    Item.objects.filter(pk__in=item_ids, state__in=["", Item.State.QUEUED]).update(
        state=Item.State.COLLECTING
    )


@transaction.atomic
def crowd_answer_record(
    *, task: CrowdTask, remote_id: str, worker_id: str, answer: str | None,
    duration_ms: int | None, confirmed: bool, platform_status: str = "submitted",
    labelled: list[int] | None = None,
) -> CrowdAssignment:  # fmt: skip
    """Record one worker's answer for a task, once per assignment id; a confirmed answer (the
    platform reports it, or the platform cannot) becomes a label. A synchronisation passes
    `labelled` to bring queue entries up to date and ask for consensus once, at its end."""
    batch = task.batch
    assignment = (
        # Only the assignment row: its labeller and label may be missing (outer joins).
        CrowdAssignment.objects.select_for_update(of=("self",))
        .select_related("batch__project", "task", "labeller", "label")
        .filter(batch=batch, remote_id=remote_id)
        .first()
    )
    if assignment is None:
        assignment = _returned(task, worker_id, remote_id)
    if assignment is None:
        try:
            with transaction.atomic():
                assignment = CrowdAssignment.objects.create(
                    batch=batch, task=task, remote_id=remote_id, worker_id=worker_id,
                    labeller=_labeller(batch.project, batch.platform, worker_id),
                    answer=answer or "", duration_ms=duration_ms,
                )  # fmt: skip
        except IntegrityError:
            # A concurrent synchronisation recorded it a moment ago: take that row.
            assignment = _recorded(batch, remote_id)
    elif assignment.worker_id != worker_id or assignment.task_id != task.pk:
        raise Conflict("this assignment belongs to another worker or item")
    if assignment.status == CrowdAssignment.Status.RECEIVED and answer is not None:
        # The platform's copy of the answer is the one the worker submitted there.
        assignment.answer = answer
        assignment.duration_ms = duration_ms or assignment.duration_ms
    if confirmed and assignment.status == CrowdAssignment.Status.RECEIVED:
        assignment.status = CrowdAssignment.Status.SUBMITTED
        _give_label(assignment, labelled=labelled)
    _take_platform_status(assignment, platform_status)
    assignment.save()
    return assignment


def _recorded(batch: CrowdBatch, remote_id: str) -> CrowdAssignment:
    found = CrowdAssignment.objects.select_for_update(of=("self",)).filter(
        batch=batch, remote_id=remote_id
    )
    if (assignment := found.select_related("batch__project", "task").first()) is None:
        raise Conflict("this worker has already answered this item")
    return assignment


def _returned(task: CrowdTask, worker_id: str, remote_id: str) -> CrowdAssignment | None:
    """An answer saved for an assignment the worker then returned unsubmitted: the new one
    takes its place (Amazon gives one worker one assignment of a HIT at a time)."""
    stale = (
        CrowdAssignment.objects.select_for_update()
        .filter(task=task, worker_id=worker_id, status=CrowdAssignment.Status.RECEIVED)
        .first()
    )
    if stale is not None:
        stale.remote_id = remote_id
    return stale


def _take_platform_status(assignment: CrowdAssignment, status: str) -> None:
    """The platform decided already (Amazon approves automatically after the delay)."""
    if status not in ("approved", "rejected") or assignment.status == status:
        return
    assignment.status = status
    assignment.decision = (
        CrowdAssignment.Decision.PAY if status == "approved" else CrowdAssignment.Decision.REFUSE
    )
    assignment.applied_at = assignment.applied_at or timezone.now()


def crowd_batch_sync(*, batch: CrowdBatch, adapter: CrowdPlatform | None = None) -> int:
    """Take the work the platform holds for the batch; return how many answers are new."""
    adapter = adapter or platform_for(batch.platform)
    before = batch.assignments.exclude(status=CrowdAssignment.Status.RECEIVED).count()
    labelled: list[int] = []
    try:
        if adapter.reports_work:
            _sync_tasks(batch, adapter, labelled)
    finally:
        # Also after a failure half-way: the labels taken so far count, and consensus runs once
        # for the whole synchronisation, not once per answer.
        if labelled:
            _items_labelled(sorted(set(labelled)))
            consensus_schedule(project_id=batch.project_id)
    batch.synced_at = timezone.now()
    batch.save(update_fields=["synced_at"])
    return batch.assignments.exclude(status=CrowdAssignment.Status.RECEIVED).count() - before


def _sync_tasks(batch: CrowdBatch, adapter: CrowdPlatform, labelled: list[int]) -> None:
    """Read every task's work from the platform; record the news in transactions of up to
    SYNC_CHUNK answers (one commit an answer would cost more than the answer)."""
    known = _known(batch)
    news: list[tuple[CrowdTask, Submission]] = []
    for task in _tasks_to_sync(batch):
        news += [
            (task, sub)
            for sub in adapter.submissions(task=task)
            if not _unchanged(known.get(sub.remote_id), sub.status)
        ]
        if len(news) >= SYNC_CHUNK:
            _record_all(news, labelled)
            news = []
    _record_all(news, labelled)


@transaction.atomic
def _record_all(news: list[tuple[CrowdTask, Submission]], labelled: list[int]) -> None:
    for task, sub in news:
        _record(task, sub, labelled)


def _unchanged(recorded: str | None, reported: str) -> bool:
    """Whether an assignment's news is already recorded (a decision Quorum has just carried out
    may not show on the platform yet)."""
    settled = (CrowdAssignment.Status.APPROVED, CrowdAssignment.Status.REJECTED)
    return recorded == reported or (reported == "submitted" and recorded in settled)


def _known(batch: CrowdBatch) -> dict[str, str]:
    """The batch's confirmed assignments and their status, by platform id: unchanged ones are
    not written again at every synchronisation."""
    confirmed = batch.assignments.exclude(status=CrowdAssignment.Status.RECEIVED)
    return dict(confirmed.values_list("remote_id", "status"))


def _tasks_to_sync(batch: CrowdBatch) -> Any:
    """Published tasks that may still hold news: not deleted, and not every assignment settled."""
    settled = Q(assignments__status__in=[CrowdAssignment.Status.APPROVED,
                                         CrowdAssignment.Status.REJECTED])  # fmt: skip
    return (
        batch.tasks.exclude(remote_id="")
        .filter(deleted_at__isnull=True)
        .annotate(settled=Count("assignments", filter=settled))
        .filter(settled__lt=batch.assignments_per_item)
        .order_by("id")
    )


def _record(task: CrowdTask, sub: Submission, labelled: list[int]) -> None:
    crowd_answer_record(
        task=task, remote_id=sub.remote_id, worker_id=sub.worker_id, answer=sub.answer,
        duration_ms=sub.duration_ms, confirmed=True, platform_status=sub.status,
        labelled=labelled,
    )  # fmt: skip


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
    if label is not None or (labeller is not None and labeller.status == Labeller.Status.REJECTED):
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
        batch.save(update_fields=["error"])
        done += 1
    return done


def task_for_hit(*, slug: str, hit_id: str) -> CrowdTask:
    """The Mechanical Turk task of a HIT of the project."""
    task = (
        CrowdTask.objects.select_related("batch__project", "item")
        .filter(batch__project__slug=slug, batch__platform="mturk", remote_id=hit_id)
        .exclude(remote_id="")
        .first()
    )
    if task is None:
        raise NotFound("this task is not known to Quorum")
    return task


def _check_answer(project: Project, answer: Any) -> str:
    if not isinstance(answer, str) or answer not in project.labels:
        raise InvalidInput(
            "invalid answer",
            errors=[InputError(f"must be one of {', '.join(project.labels)}", field="label")],
        )
    return answer


def crowd_mturk_answer(
    *, task: CrowdTask, assignment_id: str, worker_id: str, answer: Any, duration_ms: int | None
) -> CrowdAssignment:
    """Save a framed page's answer before it goes to Amazon (a label once Amazon confirms it)."""
    if task.batch.status != CrowdBatch.Status.OPEN:
        raise Conflict("this batch is closed")
    _check_ids(assignment_id=assignment_id, worker_id=worker_id)
    return crowd_answer_record(
        task=task, remote_id=assignment_id, worker_id=worker_id,
        answer=_check_answer(task.batch.project, answer), duration_ms=duration_ms,
        confirmed=False,
    )  # fmt: skip


def _check_ids(**ids: str) -> None:
    bad = [name for name, value in ids.items() if not value or len(value) > 200]
    if bad:
        raise InvalidInput(
            "missing worker details", errors=[InputError("is required", field=n) for n in bad]
        )


def link_batch(*, slug: str, token: str) -> CrowdBatch:
    """The link-based batch of a study link."""
    batch = (
        CrowdBatch.objects.select_related("project")
        .filter(project__slug=slug, token=token)
        .exclude(platform="mturk")
        .first()
    )
    if batch is None:
        raise NotFound("this study link is not known to Quorum")
    return batch


def link_next_task(*, batch: CrowdBatch, worker_id: str) -> CrowdTask | None:
    """The next task of the batch for this worker: one they have not done that wants answers."""
    done = CrowdAssignment.objects.filter(batch=batch, worker_id=worker_id).values("task_id")
    return (
        batch.tasks.exclude(pk__in=done)
        .annotate(n=Count("assignments"))
        .filter(n__lt=batch.assignments_per_item)
        .select_related("item")
        .order_by("id")
        .first()
    )


def worker_may_work(*, batch: CrowdBatch, worker_id: str) -> bool:
    """Whether the worker may take more of the batch's work (not paused, rejected or blocked)."""
    status = (
        Labeller.objects.filter(project=batch.project, platform=batch.platform, worker_id=worker_id)
        .values_list("status", flat=True)
        .first()
    )
    return status in (None, Labeller.Status.ACTIVE)


def crowd_link_answer(
    *, batch: CrowdBatch, task_id: Any, worker_id: str, session_id: str, study_id: str,
    answer: Any, duration_ms: int | None,
) -> CrowdAssignment:  # fmt: skip
    """Record a link-based worker's answer (one assignment per session and item) as a label."""
    if batch.status != CrowdBatch.Status.OPEN:
        raise Conflict("this study has ended")
    _check_ids(worker_id=worker_id, session_id=session_id)
    if not worker_may_work(batch=batch, worker_id=worker_id):
        raise Conflict("there is no more work for you in this study")
    task = batch.tasks.filter(pk=int(task_id) if str(task_id).isdigit() else 0).first()
    if task is None:
        raise NotFound("this item is not part of the study")
    if not batch.remote_id and study_id:
        CrowdBatch.objects.filter(pk=batch.pk, remote_id="").update(remote_id=study_id[:255])
    return crowd_answer_record(
        task=task, remote_id=f"{session_id}:{task.pk}", worker_id=worker_id,
        answer=_check_answer(batch.project, answer), duration_ms=duration_ms, confirmed=True,
    )  # fmt: skip


def crowd_balance(*, platform: str) -> Decimal | None:
    """The platform's available balance, or None where it has none to tell."""
    return platform_for(platform).balance()
