"""Selectors of the expert review: the escalation queue, the evidence for each escalation, and the
experts' figures for the project dashboard."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import timedelta
from typing import Any

from django.db.models import Count, F, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone

from core.exceptions import NotFound
from core.permissions import Role, check_role
from labelling.models import Consensus, Escalation, Item, Label, Prediction, Project
from labelling.selectors import User, project_role


def escalation_for_user(*, user: User, escalation_id: int, roles: Collection[Role]) -> Escalation:
    """An escalation, if the user holds one of `roles` in its project."""
    escalation = Escalation.objects.select_related("project").filter(pk=escalation_id).first()
    if escalation is None:
        raise NotFound("escalation not found")
    check_role(project_role(user, escalation.project), roles, "escalation")
    return escalation


def escalation_queue(project: Project, reason: str | None = None) -> QuerySet[Escalation]:
    """The project's open escalations whose item still waits for an expert, most urgent first."""
    queue = Escalation.objects.filter(
        project=project, resolved_at__isnull=True, item__state=Item.State.ESCALATED
    )
    if reason:
        queue = queue.filter(reason=reason)
    return queue.order_by("-priority", "id")


def open_by_reason(project: Project) -> dict[str, int]:
    """How many escalations wait for an expert, by reason (every reason listed)."""
    counts = dict(
        escalation_queue(project).order_by().values_list("reason").annotate(n=Count("id"))
    )
    return {reason: counts.get(reason, 0) for reason in Escalation.Reason.values}


def _by_label(labels: Sequence[str], values: Sequence[float] | None) -> dict[str, float] | None:
    if not values or len(values) != len(labels):
        return None
    return {label: round(float(v), 4) for label, v in zip(labels, values, strict=True)}


def _predictions(item_ids: list[int], labels: Sequence[str]) -> dict[int, dict[str, Any]]:
    """The latest prediction of each item."""
    found: dict[int, dict[str, Any]] = {}
    rows = Prediction.objects.filter(item_id__in=item_ids).order_by("item_id", "created_at", "id")
    for p in rows:
        found[p.item_id] = {
            "model_version": p.model_version,
            "label": p.predicted_label,
            "confidence": round(p.confidence, 4),
            "probabilities": _by_label(labels, p.probabilities),
        }
    return found


def _consensus(item_ids: list[int], labels: Sequence[str]) -> dict[int, dict[str, Any]]:
    return {
        c.item_id: {
            "label": c.label,
            "confidence": round(c.confidence, 4),
            "posterior": _by_label(labels, c.posterior),
            "agreement": None if c.agreement is None else round(c.agreement, 4),
            "n_labels": c.n_labels,
            "method": c.method,
        }
        for c in Consensus.objects.filter(item_id__in=item_ids)
    }


def _reliability(labeller: Any) -> dict[str, Any]:
    return {
        "n_labels": labeller.n_labels,
        "accuracy": labeller.accuracy,
        "gold_accuracy": labeller.gold_accuracy,
        "agreement": labeller.agreement,
        "flags": labeller.flags,
        "status": labeller.status,
    }


def _labels(item_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Every valid crowd label of the items, with its labeller's reliability."""
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rows = (
        Label.objects.filter(item_id__in=item_ids, state=Label.State.VALID)
        .select_related("labeller", "labeller__user")
        .order_by("item_id", "created_at", "id")
    )
    for label in rows:
        found[label.item_id].append(
            {
                "labeller_id": label.labeller_id,
                "labeller": label.labeller.display_name,
                "label": label.value,
                "created_at": label.created_at,
                "duration_ms": label.duration_ms,
                "reliability": _reliability(label.labeller),
            }
        )
    return found


def _notes(item_ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    """Earlier expert decisions on the items, oldest first, with their notes."""
    found: dict[int, list[dict[str, Any]]] = defaultdict(list)
    rows = (
        Escalation.objects.filter(item_id__in=item_ids, resolved_at__isnull=False)
        .select_related("resolved_by")
        .order_by("item_id", "resolved_at", "id")
    )
    for e in rows:
        found[e.item_id].append(
            {
                "at": e.resolved_at,
                "by": e.resolved_by.username if e.resolved_by else "",
                "reason": e.reason,
                "resolution": e.resolution,
                "label": e.label,
                "note": e.note,
            }
        )
    return found


def escalation_evidence(escalations: Sequence[Escalation]) -> list[dict[str, Any]]:
    """What an expert needs to decide each escalation: the item, the model's prediction, every
    crowd label with its labeller's reliability, the consensus posterior, the gold answer and the
    earlier notes. A handful of queries however many escalations."""
    if not escalations:
        return []
    labels = escalations[0].project.labels
    ids = [e.item_id for e in escalations]
    items = {i.pk: i for i in Item.objects.filter(pk__in=ids)}
    predictions, consensus = _predictions(ids, labels), _consensus(ids, labels)
    crowd, notes = _labels(ids), _notes(ids)
    return [
        {
            "escalation": e,
            "item": items[e.item_id],
            "prediction": predictions.get(e.item_id),
            "consensus": consensus.get(e.item_id),
            "labels": crowd.get(e.item_id, []),
            "notes": notes.get(e.item_id, []),
        }
        for e in escalations
    ]


def resolved_by_day(project: Project, days: int = 30) -> list[tuple[Any, int]]:
    """(day, escalations resolved) for the last `days` days that had any."""
    since = timezone.now() - timedelta(days=days)
    rows = (
        Escalation.objects.filter(project=project, resolved_at__gte=since)
        .annotate(day=TruncDate("resolved_at"))
        .values("day")
        .annotate(n=Count("id"))
        .order_by("day")
    )
    return [(row["day"], row["n"]) for row in rows]


def review_statistics(project: Project) -> dict[str, Any]:
    """The experts' figures: open escalations by reason, resolved per day, decisions by kind,
    how often the expert's label overruled the crowd's answer, and recent notes for the crowd."""
    resolved = Escalation.objects.filter(project=project, resolved_at__isnull=False)
    compared = resolved.exclude(label="").exclude(crowd_label="")
    figures = compared.aggregate(
        n=Count("id"), overruled=Count("id", filter=~Q(label=F("crowd_label")))
    )
    by_day = resolved_by_day(project)
    by_kind = dict(resolved.order_by().values_list("resolution").annotate(n=Count("id")))
    return {
        "open": open_by_reason(project),
        "resolved": sum(by_kind.values()),
        "by_resolution": {kind: by_kind.get(kind, 0) for kind in Escalation.Resolution.values},
        "by_day": by_day,
        "by_day_max": max((n for _, n in by_day), default=0),
        "compared": figures["n"],
        "overruled": figures["overruled"],
        "overruled_share": figures["overruled"] / figures["n"] if figures["n"] else None,
        "send_back_notes": list(
            resolved.filter(resolution=Escalation.Resolution.SEND_BACK)
            .select_related("item", "resolved_by")
            .order_by("-resolved_at")[:10]
        ),
    }
