"""The crowd labelling page: items come and answers go through the JSON API, from label.js."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_safe

from core.permissions import LABELLERS
from labelling.rendering import IMAGE_URL, instructions_html, label_buttons
from labelling.views.access import project_page


@login_required
@require_safe
def label_page(request: HttpRequest, slug: str) -> HttpResponse:
    """The labelling page; items come and answers go through the JSON API, from label.js."""
    project = project_page(request, slug, LABELLERS)
    if isinstance(project, HttpResponse):
        return project
    lease_url = reverse("api-lease-skip", kwargs={"lease_id": 0}).removesuffix("0/skip")
    config = {
        "next_url": reverse("api-task-next", kwargs={"slug": project.slug}),
        "lease_url": lease_url,
        "image_pattern": IMAGE_URL.pattern,
        "login_url": reverse("login"),
        "storage_key": f"quorum:label:{project.slug}",
        "heartbeat_ms": 60_000,
    }
    buttons = label_buttons(list(project.labels))
    context = {
        "project": project,
        "instructions": instructions_html(project.instructions),
        "buttons": buttons,
        "keys_are_labels": all(b.key == b.label for b in buttons),
        "config": config,
    }
    return render(request, "labelling/label.html", context)
