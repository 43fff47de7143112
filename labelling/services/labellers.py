"""Adding people to projects."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.validators import UnicodeUsernameValidator
from django.core.exceptions import ValidationError
from django.db import transaction
from rest_framework.authtoken.models import Token

from core.exceptions import InputError, InvalidInput
from core.permissions import Role
from labelling.models import Labeller, Project


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
