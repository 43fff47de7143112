"""Publishing a batch on an outside platform: the items it takes, its cost, and the publication
itself, which can be finished after a failure without posting anything twice."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.exceptions import Conflict, InputError, InvalidInput, PlatformError
from labelling.crowd.models import CrowdBatch, CrowdTask
from labelling.crowd.platforms import CENT, CrowdPlatform, platform_for
from labelling.models import Project, QueueEntry

logger = logging.getLogger("quorum.crowd")


MAX_BATCH = 5000


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
    if (
        isinstance(value, bool)
        or not (str(value).strip().isascii() and str(value).strip().isdigit())
        or not 1 <= int(value) <= high
    ):
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


def crowd_balance(*, platform: str) -> Decimal | None:
    """The platform's available balance, or None where it has none to tell."""
    return platform_for(platform).balance()
