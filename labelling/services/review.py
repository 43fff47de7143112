"""Expert review: lending escalations to experts and recording their final decisions.

An escalation is leased like crowd work: the next one is taken with `SELECT … FOR UPDATE SKIP
LOCKED` on PostgreSQL, so two experts asking at once get different items, and the lease lives on
the escalation row (one holder by construction; one held escalation an expert and project by a
unique constraint). Resolving locks the item's queue entry, the item and then the escalation, the
order in which consensus writes them, and refuses an escalation another expert holds.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core.exceptions import Conflict, InputError, InvalidInput, NotFound
from labelling.models import Consensus, Escalation, Item, Label, Labeller, Project, QueueEntry
from labelling.services.consensus import consensus_schedule
from labelling.services.decisions import decision_time
from labelling.services.floors import queue_reopened

ESCALATION, ITEM = Escalation._meta.db_table, Item._meta.db_table
Resolution = Escalation.Resolution
# The actions that set the item's final label, and those whose note is required.
LABELLING = {Resolution.LABEL, Resolution.GOLD}
NEEDS_NOTE = {Resolution.SEND_BACK}


@dataclass(frozen=True)
class Decision:
    """An expert's decision on an escalation, as the API and the page send it."""

    action: str
    label: str = ""
    note: str = ""


def _lease_seconds() -> int:
    return int(settings.LEASE_SECONDS)


def _held(project: Project, user: Any) -> Escalation | None:
    """The open escalation of the project this expert holds, if any (expired or not)."""
    return (
        Escalation.objects.select_for_update(of=("self",))
        .filter(project=project, leased_to=user, resolved_at__isnull=True)
        .first()
    )


def _next_id(project: Project, user: Any, reason: str | None) -> int | None:
    """The most urgent open escalation nobody else holds, locked; skips locked rows on PG."""
    lock = " FOR UPDATE OF e SKIP LOCKED" if connection.vendor == "postgresql" else ""
    where, params = "", [project.pk, timezone.now(), user.pk]
    if reason:
        where, params = " AND e.reason = %s", [*params, reason]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT e.id FROM {ESCALATION} e JOIN {ITEM} i ON i.id = e.item_id "
            f"WHERE e.project_id = %s AND e.resolved_at IS NULL AND i.state = 'escalated' "
            f"AND (e.leased_to_id IS NULL OR e.lease_expires_at <= %s OR e.leased_to_id = %s)"
            f"{where} ORDER BY e.priority DESC, e.id LIMIT 1{lock}",
            params,
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _lend(escalation: Escalation, user: Any) -> Escalation:
    escalation.leased_to = user
    escalation.lease_expires_at = timezone.now() + timedelta(seconds=_lease_seconds())
    escalation.save(update_fields=["leased_to", "lease_expires_at"])
    return escalation


def _give_back(escalation: Escalation) -> None:
    escalation.leased_to, escalation.lease_expires_at = None, None
    escalation.save(update_fields=["leased_to", "lease_expires_at"])


def _check_reason(reason: str | None) -> str | None:
    if reason and reason not in Escalation.Reason.values:
        raise InvalidInput(
            "invalid reason",
            errors=[InputError(f"must be one of {', '.join(Escalation.Reason.values)}", "reason")],
        )
    return reason or None


@transaction.atomic
def escalation_lease(
    *, project: Project, user: Any, reason: str | None = None
) -> Escalation | None:
    """Lend the expert the most urgent open escalation (of one reason, if given); the one they
    hold already comes back first, so a reload of the page shows the same item."""
    reason = _check_reason(reason)
    # One lease call of an expert at a time (two tabs, a double click): without this, both
    # would find nothing held and take two escalations, which the one-held constraint refuses.
    Labeller.objects.select_for_update(of=("self",)).filter(project=project, user=user).first()
    held = _held(project, user)
    if (
        held is not None
        and held.item.state == Item.State.ESCALATED
        and reason in (None, held.reason)
    ):
        return _lend(held, user)
    if held is not None:
        _give_back(held)
    found = _next_id(project, user, reason)
    if found is None:
        return None
    return _lend(Escalation.objects.select_for_update(of=("self",)).get(pk=found), user)


def _check_decision(project: Project, decision: Decision) -> Decision:
    """The decision's action, label and note, checked against each other and the project."""
    errors = []
    if decision.action not in Resolution.values:
        errors.append(InputError(f"must be one of {', '.join(Resolution.values)}", "action"))
    elif decision.action in LABELLING and decision.label not in project.labels:
        errors.append(
            InputError(
                f"{decision.label!r} is not one of the project's labels: "
                f"{', '.join(project.labels)}",
                "label",
            )
        )
    elif decision.action not in LABELLING and decision.label:
        errors.append(InputError(f"a {decision.action} decision takes no label", "label"))
    if decision.action in NEEDS_NOTE and not decision.note.strip():
        errors.append(InputError("say what the crowd should be told", "note"))
    if errors:
        raise InvalidInput("invalid decision", errors=errors)
    return decision


def _locked(escalation_id: int) -> tuple[Escalation, QueueEntry | None]:
    """The escalation and its item's queue entry, locked in consensus's order: entry, item,
    escalation."""
    found = Escalation.objects.filter(pk=escalation_id).values_list("item_id", flat=True).first()
    if found is None:
        raise NotFound("escalation not found")
    entry = QueueEntry.objects.select_for_update().filter(item_id=found).first()
    Item.objects.select_for_update().filter(pk=found).first()
    escalation = (
        Escalation.objects.select_for_update(of=("self",))
        .select_related("project", "item", "resolved_by")
        .get(pk=escalation_id)
    )
    return escalation, entry


def _repeat(escalation: Escalation, user: Any, decision: Decision) -> Escalation:
    """A resolved escalation: the same expert's same decision again is answered as before."""
    same = (escalation.resolution, escalation.label) == (decision.action, decision.label)
    if escalation.resolved_by_id == user.pk and same:
        return escalation
    by = escalation.resolved_by.username if escalation.resolved_by else "someone"
    raise Conflict(f"this escalation was already resolved by {by} ({escalation.resolution})")


def _check_not_held_by_another(escalation: Escalation, user: Any) -> None:
    if (
        escalation.leased_to_id not in (None, user.pk)
        and escalation.lease_expires_at is not None
        and escalation.lease_expires_at > timezone.now()
    ):
        raise Conflict("another expert is reviewing this item; ask for the next one")


def _apply(escalation: Escalation, entry: QueueEntry | None, decision: Decision, now: Any) -> None:
    """Change the item as the decision says."""
    item, project = escalation.item, escalation.project
    if decision.action == Resolution.SEND_BACK:
        if entry is None:
            raise Conflict("this item's labels were imported: there is no crowd to send it to")
        # A fresh round: overlap.min more labels, from labellers who have not seen the item.
        QueueEntry.objects.filter(pk=entry.pk).update(
            needed=F("labels_count") + project.overlap_min, collecting=True
        )
        queue_reopened([project.pk])
        item.state, item.expert_label = Item.State.COLLECTING, ""
    elif decision.action == Resolution.REMOVE:
        item.state, item.expert_label = Item.State.REMOVED, ""
    else:
        item.state, item.expert_label = Item.State.RESOLVED, decision.label
        item.decided_at = decision_time(project_id=project.pk)
        if decision.action == Resolution.GOLD:
            item.gold_label, item.gold_set_at = decision.label, now
    if entry is not None and decision.action != Resolution.SEND_BACK:
        QueueEntry.objects.filter(pk=entry.pk).update(collecting=False)
    item.save(update_fields=["state", "expert_label", "gold_label", "gold_set_at", "decided_at"])


def _crowd_answer(item_id: int) -> str:
    """The crowd's answer: its most common valid label, ties broken by the consensus."""
    counts = Counter(
        Label.objects.filter(item_id=item_id, state=Label.State.VALID).values_list(
            "value", flat=True
        )
    )
    if not counts:
        return ""
    top = max(counts.values())
    tied = sorted(value for value, n in counts.items() if n == top)
    consensus = Consensus.objects.filter(item_id=item_id).values_list("label", flat=True).first()
    return consensus if consensus in tied else tied[0]


@transaction.atomic
def escalation_resolve(*, escalation_id: int, user: Any, decision: Decision) -> Escalation:
    """Record the expert's final decision: a label (or a gold answer), removal, or another crowd
    round with a note; the crowd's labels that disagree then count against their labellers."""
    escalation, entry = _locked(escalation_id)
    decision = _check_decision(escalation.project, decision)
    if escalation.resolved_at is not None:
        return _repeat(escalation, user, decision)
    _check_not_held_by_another(escalation, user)
    if escalation.item.state in (Item.State.RESOLVED, Item.State.REMOVED):
        raise Conflict(f"the item is already {escalation.item.state}")
    now = timezone.now()
    _apply(escalation, entry, decision, now)
    escalation.crowd_label = _crowd_answer(escalation.item_id)
    escalation.resolution, escalation.label = decision.action, decision.label
    escalation.note, escalation.resolved_by, escalation.resolved_at = decision.note, user, now
    escalation.leased_to, escalation.lease_expires_at = None, None
    escalation.save()
    project_id = escalation.project_id
    transaction.on_commit(lambda: consensus_schedule(project_id=project_id))
    return escalation
