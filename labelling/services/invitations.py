"""Sign-up links: an engineer invites crowd labellers (or experts) to a project."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from core.exceptions import Conflict, InputError, InvalidInput, NotFound
from core.permissions import Role
from labelling.models import Invitation, Labeller, Project
from labelling.services.labellers import check_username

# Links hand out the roles that do labelling work; engineers are made on the command line.
INVITABLE = (Role.CROWD, Role.EXPERT)


def invitation_create(
    *, project: Project, user: Any, role: str = Role.CROWD, max_uses: int = 100, days: int = 14
) -> Invitation:
    """A new sign-up link for the project, valid for `days` and `max_uses` sign-ups."""
    errors = []
    if role not in INVITABLE:
        errors.append(InputError("must be crowd or expert", field="role"))
    if not 1 <= max_uses <= 100_000:
        errors.append(InputError("must be between 1 and 100000", field="max_uses"))
    if not 1 <= days <= 365:
        errors.append(InputError("must be between 1 and 365", field="days"))
    if errors:
        raise InvalidInput("invalid invitation", errors=errors)
    return Invitation.objects.create(
        project=project,
        token=secrets.token_urlsafe(24),
        role=role,
        max_uses=max_uses,
        expires_at=timezone.now() + timedelta(days=days),
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )


def invitation_for(token: str) -> Invitation:
    """The invitation with this token, if it can still be used."""
    invitation = Invitation.objects.select_related("project").filter(token=token).first()
    if invitation is None:
        raise NotFound("this sign-up link does not exist")
    if invitation.expires_at <= timezone.now() or invitation.uses >= invitation.max_uses:
        raise Conflict("this sign-up link has expired; ask the project's engineer for a new one")
    return invitation


def _check_password(password: str, username: str) -> None:
    user = get_user_model()(username=username)
    try:
        password_validation.validate_password(password, user)
    except ValidationError as exc:
        raise InvalidInput(
            "choose another password",
            errors=[InputError(str(message), field="password") for message in exc.messages],
        ) from None


@transaction.atomic
def invitation_accept(*, token: str, username: str, password: str) -> Labeller:
    """Create the account a sign-up link offers and give it the link's role in the project."""
    invitation = invitation_for(token)
    check_username(username)
    if get_user_model().objects.filter(username=username).exists():
        raise InvalidInput(
            "choose another username", errors=[InputError("is taken", field="username")]
        )
    _check_password(password, username)
    user = get_user_model().objects.create_user(username=username, password=password)
    # Counted with F() so that two sign-ups at once cannot both take the last place.
    used = Invitation.objects.filter(pk=invitation.pk, uses__lt=F("max_uses")).update(
        uses=F("uses") + 1
    )
    if not used:
        raise Conflict("this sign-up link has just been used up")
    return Labeller.objects.create(project=invitation.project, user=user, role=invitation.role)
