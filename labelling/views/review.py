"""The expert's review page: escalations come and decisions go through the JSON API, from
review.js; the page itself holds the project's labels, keys, instructions and queue counts."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from core.permissions import REVIEWERS
from labelling.rendering import IMAGE_URL, REVIEW_KEYS, instructions_html, label_buttons
from labelling.review import open_by_reason
from labelling.views.access import project_page


@login_required
@require_safe
def review_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The review page for the project's experts and engineers; a crowd labeller gets 403."""
    project = project_page(request, slug, REVIEWERS)
    if isinstance(project, HttpResponse):
        return project
    resolve_url = reverse("api-escalation-resolve", kwargs={"escalation_id": 0})
    config = {
        "next_url": reverse("api-escalation-next", kwargs={"slug": project.slug}),
        "resolve_url": resolve_url.removesuffix("0/resolve"),
        "image_pattern": IMAGE_URL.pattern,
        "login_url": reverse("login"),
        "labels": list(project.labels),
    }
    buttons = label_buttons(list(project.labels), REVIEW_KEYS)
    counts = open_by_reason(project)
    context = {
        "project": project,
        "instructions": instructions_html(project.instructions),
        "buttons": buttons,
        "keys_are_labels": all(b.key == b.label for b in buttons),
        "open_total": sum(counts.values()),
        "reasons": list(counts.items()),
        "config": config,
    }
    return render(request, "labelling/review.html", context)
