"""Adding people to projects."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

from core.exceptions import Conflict, InputError, InvalidInput
from core.permissions import Role
from labelling.models import Label, Labeller, LabellerDecision, Project


def check_username(username: str) -> None:
    """Refuse a username Django would not accept, naming the field."""
    try:
        UnicodeUsernameValidator()(username)
    except ValidationError:
        raise InvalidInput(
            "invalid username",
            errors=[InputError("use letters, digits and @/./+/-/_ only", field="username")],
        ) from None
    if not 1 <= len(username) <= 150:
        raise InvalidInput(
            "invalid username", errors=[InputError("1–150 characters", field="username")]
        )


@transaction.atomic
def labeller_create(*, project: Project, username: str, role: str) -> tuple[Labeller, str]:
    """Give a user (created if new) a role in a project; return the labeller and their API token."""
    if role not in Role.values:
        raise InvalidInput(
            "invalid role",
            errors=[InputError(f"must be one of {', '.join(Role.values)}", field="role")],
        )
    check_username(username)
    user, created = get_user_model().objects.get_or_create(username=username)
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    labeller, _ = Labeller.objects.update_or_create(
        project=project, user=user, defaults={"role": role}
    )
    token, _ = Token.objects.get_or_create(user=user)
    return labeller, token.key


def _decide(
    labeller: Labeller, kind: str, user: Any, reason: str, **counts: int
) -> LabellerDecision:
    return LabellerDecision.objects.create(
        labeller=labeller,
        kind=kind,
        reason=reason[:2000],
        decided_by=user if getattr(user, "is_authenticated", False) else None,
        **counts,
    )


@transaction.atomic
def labeller_reject(
    *, labeller: Labeller, user: Any, reason: str = "", batch: str = ""
) -> LabellerDecision:
    """Void the labeller's labels (all, or one batch), re-open the affected items, recompute."""
    from labelling.services.consensus import consensus_compute
    from labelling.services.leasing import entries_reopen, leases_withdraw

    labels = Label.objects.filter(labeller=labeller, state=Label.State.VALID)
    if batch:
        if not labels.filter(batch=batch).exists():
            raise InvalidInput(
                "nothing to reject",
                errors=[
                    InputError(f"the labeller has no valid labels in {batch!r}", field="batch")
                ],
            )
        labels = labels.filter(batch=batch)
    item_ids = sorted(set(labels.values_list("item_id", flat=True)))
    voided = labels.update(
        state=Label.State.VOIDED,
        voided_at=timezone.now(),
        voided_by=user if getattr(user, "is_authenticated", False) else None,
        void_reason=f"labeller rejected: {reason}"[:200],
    )
    if not batch:
        labeller.status = Labeller.Status.REJECTED
        labeller.save(update_fields=["status", "updated_at"])
        leases_withdraw(labeller=labeller)
    reopened = entries_reopen(project=labeller.project, item_ids=item_ids)
    consensus_compute(project=labeller.project)
    return _decide(
        labeller, LabellerDecision.Kind.REJECT, user, reason,
        labels_voided=voided, items_reopened=reopened,
    )  # fmt: skip


@transaction.atomic
def labeller_approve(*, labeller: Labeller, user: Any, reason: str = "") -> LabellerDecision:
    """Clear a pause: the labeller works again and their flags are accepted as they are."""
    if labeller.status in (Labeller.Status.REJECTED, Labeller.Status.BLOCKED):
        raise Conflict(f"the labeller is {labeller.status}; that decision is final")
    labeller.status = Labeller.Status.ACTIVE
    labeller.save(update_fields=["status", "updated_at"])
    return _decide(labeller, LabellerDecision.Kind.APPROVE, user, reason)


@transaction.atomic
def labeller_block(*, labeller: Labeller, user: Any, reason: str = "") -> LabellerDecision:
    """Stop all future work of the labeller in the project (their past labels stay as they are)."""
    from labelling.services.leasing import leases_withdraw

    labeller.status = Labeller.Status.BLOCKED
    labeller.save(update_fields=["status", "updated_at"])
    leases_withdraw(labeller=labeller)
    return _decide(labeller, LabellerDecision.Kind.BLOCK, user, reason)
