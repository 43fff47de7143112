"""The one access check of the pages: the project, if the user holds one of the roles."""

from __future__ import annotations

from collections.abc import Collection

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from core.exceptions import NotFound, PermissionDenied
from core.permissions import Role
from labelling import selectors
from labelling.models import Project


def project_page(
    request: HttpRequest, slug: str, roles: Collection[Role]
) -> Project | HttpResponse:
    """The project if the user holds one of `roles` in it; else the 404 page for someone with no
    role there (its existence is not revealed), the 403 page for a member with another role."""
    try:
        return selectors.project_for_user(user=request.user, slug=slug, roles=roles)
    except NotFound:
        raise Http404("project not found") from None
    except PermissionDenied as exc:
        return render(request, "403.html", {"message": exc.message}, status=403)
