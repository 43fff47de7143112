"""Server-rendered pages. Views fetch through selectors and hold no decisions."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from core.exceptions import NotFound, PermissionDenied
from core.permissions import ENGINEERS
from labelling import selectors
from labelling.rendering import histogram_bars, payload_fields


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The projects this user works on."""
    return render(
        request, "labelling/home.html", {"memberships": selectors.projects_for_user(request.user)}
    )


@login_required
def project_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    """The engineer's view of a project: what came in and what the model is unsure of."""
    try:
        project = selectors.project_for_user(user=request.user, slug=slug, roles=ENGINEERS)
    except NotFound:
        raise Http404("project not found") from None
    except PermissionDenied as exc:
        return render(request, "403.html", {"message": exc.message}, status=403)
    version = selectors.latest_model_version(project)
    doubtful = selectors.least_confident_predictions(project, version) if version else []
    context = {
        "project": project,
        "overview": selectors.project_overview(project),
        "version": version,
        "bars": histogram_bars(selectors.confidence_histogram(project, version)) if version else [],
        "queued_bars": (
            histogram_bars(selectors.confidence_histogram(project, version, queued_only=True))
            if version
            else []
        ),
        "queue": selectors.queue_overview(project),
        "doubtful": [(p, payload_fields(p.item.payload)) for p in doubtful],
    }
    return render(request, "labelling/project_dashboard.html", context)
