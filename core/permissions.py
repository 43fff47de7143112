"""Roles a user can hold in a project, and the rule of which role may do what."""

from __future__ import annotations

from collections.abc import Collection

from django.db import models

from core.exceptions import NotFound, PermissionDenied


class Role(models.TextChoices):
    """A labeller's role in one project."""

    CROWD = "crowd", "Crowd labeller"
    EXPERT = "expert", "Expert"
    ENGINEER = "engineer", "Engineer"


# Who may do what, named once and used by every view.
ENGINEERS = frozenset({Role.ENGINEER})
REVIEWERS = frozenset({Role.EXPERT, Role.ENGINEER})
LABELLERS = frozenset({Role.CROWD, Role.EXPERT, Role.ENGINEER})


def check_role(role: Role | None, allowed: Collection[Role], what: str) -> None:
    """Raise unless `role` is one of `allowed`.

    Someone with no role in the project gets NotFound, so that guessing a slug or an id tells
    them nothing; a member with the wrong role gets PermissionDenied.
    """
    if role is None:
        raise NotFound(f"{what} not found")
    if role not in allowed:
        names = ", ".join(sorted(r.label.lower() for r in allowed))
        raise PermissionDenied(f"this needs the role of {names} in the project")
