"""Reads of outside-crowd work for the engineer's pages."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q

from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdBlock
from labelling.models import Project

SUBMITTED = CrowdAssignment.Status.SUBMITTED


def batches_overview(project: Project, limit: int = 50) -> list[CrowdBatch]:
    """The project's batches, newest first, with counts of tasks and assignments by state."""
    return list(
        CrowdBatch.objects.filter(project=project)
        .annotate(
            n_tasks=Count("tasks", distinct=True),
            n_received=Count("assignments", distinct=True),
            n_submitted=Count(
                "assignments", filter=Q(assignments__status=SUBMITTED), distinct=True
            ),
            n_approved=Count(
                "assignments", filter=Q(assignments__status="approved"), distinct=True
            ),
            n_rejected=Count(
                "assignments", filter=Q(assignments__status="rejected"), distinct=True
            ),
        )
        .order_by("-created_at", "-id")[:limit]
    )


def pending_decisions(project: Project, limit: int = 200) -> list[CrowdAssignment]:
    """Confirmed work not yet paid or refused on its platform: waiting for a labeller decision,
    for the engineer to apply on a link-based platform, or refused by the platform."""
    return list(
        CrowdAssignment.objects.filter(
            batch__project=project, status=SUBMITTED, applied_at__isnull=True
        )
        .select_related("batch", "labeller", "task__item")
        .order_by("worker_id", "id")[:limit]
    )


def pending_blocks(project: Project) -> list[CrowdBlock]:
    """Blocks decided but not yet in force on their platform."""
    return list(
        CrowdBlock.objects.filter(project=project, applied_at__isnull=True).select_related(
            "labeller"
        )
    )


def crowd_summary(project: Project) -> dict[str, Any]:
    """For the dashboard: open batches and decisions waiting."""
    return {
        "open": CrowdBatch.objects.filter(project=project, status=CrowdBatch.Status.OPEN).count(),
        "batches": CrowdBatch.objects.filter(project=project).count(),
        "pending": CrowdAssignment.objects.filter(
            batch__project=project, status=SUBMITTED, applied_at__isnull=True
        ).count(),
    }
