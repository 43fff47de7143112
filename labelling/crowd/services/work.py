"""Work coming back from outside platforms: answers recorded once per assignment, turned into
labels of one labeller per (platform, worker id); the synchronisation with platforms that report
work, and the pages' answers (the framed Mechanical Turk page, study links)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, Q
from django.utils import timezone

from core.exceptions import Conflict, InputError, InvalidInput, NotFound, QuorumError
from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdTask
from labelling.crowd.platforms import CrowdPlatform, Submission, platform_for
from labelling.models import Item, Label, Labeller, Project
from labelling.services.consensus import consensus_schedule
from labelling.services.leasing import entries_recount

logger = logging.getLogger("quorum.crowd")


SYNC_CHUNK = 200


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
    # The worker writes the answer: anything longer than a label is not one anyway.
    answer = None if answer is None else answer[:100]
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
        # A worker writes the answer: one that cannot be stored must not hold up the others,
        # nor come back at every synchronisation to stop the batch again.
        try:
            with transaction.atomic():
                _record(task, sub, labelled)
        except (QuorumError, DatabaseError, ValueError) as exc:
            logger.warning("crowd answer %s of task %s not recorded: %s", sub, task.pk, exc)


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
    raw = str(task_id)
    task = batch.tasks.filter(pk=int(raw) if raw.isascii() and raw.isdigit() else 0).first()
    if task is None:
        raise NotFound("this item is not part of the study")
    # Study links are shared: the item's quota holds here too, not only when handing items out.
    others = task.assignments.exclude(remote_id=f"{session_id}:{task.pk}")
    if others.count() >= batch.assignments_per_item:
        raise Conflict("this item has all the answers it needs; ask for the next one")
    if not batch.remote_id and study_id:
        CrowdBatch.objects.filter(pk=batch.pk, remote_id="").update(remote_id=study_id[:255])
    return crowd_answer_record(
        task=task, remote_id=f"{session_id}:{task.pk}", worker_id=worker_id,
        answer=_check_answer(batch.project, answer), duration_ms=duration_ms, confirmed=True,
    )  # fmt: skip
