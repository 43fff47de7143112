"""Pages about people: the labellers table and a labeller's detail, and joining by invitation."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_safe

from core.exceptions import QuorumError
from labelling import selectors
from labelling.models import Labeller
from labelling.rendering import series_points, volume_reliability_dots
from labelling.services.invitations import invitation_accept, invitation_for
from labelling.services.labellers import labeller_approve, labeller_block, labeller_reject
from labelling.views.engineer import engineer_project

DECISIONS = {"approve": labeller_approve, "block": labeller_block}


@login_required
@require_http_methods(["GET", "POST"])
def project_labellers(request: HttpRequest, slug: str) -> HttpResponse:
    """The labeller table with reliability, flags and decisions; a scatter; agreement by day."""
    project = engineer_project(request, slug)
    if isinstance(project, HttpResponse):
        return project
    if request.method == "POST":
        return _decide(request, project.slug, project.pk)
    labellers = selectors.labellers_overview(project)
    by_day = selectors.agreement_by_day(project)
    context = {
        "project": project,
        "labellers": labellers,
        "dots": volume_reliability_dots(labellers),
        "by_day": by_day,
        "agreement_points": series_points([share for _, share, _ in by_day]),
        "decisions": selectors.decisions_log(project),
    }
    return render(request, "labelling/labellers.html", context)


def _decide(request: HttpRequest, slug: str, project_id: int) -> HttpResponse:
    raw = request.POST.get("labeller", "")
    labeller = Labeller.objects.filter(
        pk=int(raw) if raw.isascii() and raw.isdigit() else 0,
        project_id=project_id,
    ).first()
    action = request.POST.get("action", "")
    reason = request.POST.get("reason", "")[:2000]
    if labeller is None or action not in {"reject", "approve", "block"}:
        messages.error(request, "Nothing decided: choose a labeller of this project and an action.")
        return redirect("project-labellers", slug=slug)
    try:
        if action == "reject":
            batch = request.POST.get("batch", "")[:100]
            decision = labeller_reject(
                labeller=labeller, user=request.user, reason=reason, batch=batch
            )
        else:
            decision = DECISIONS[action](labeller=labeller, user=request.user, reason=reason)
    except QuorumError as exc:
        messages.error(request, f"Nothing decided: {exc.report()}")
        return redirect("project-labellers", slug=slug)
    messages.success(
        request,
        f"{labeller.display_name}: {decision.kind}"
        + (
            f", {decision.labels_voided} labels voided, {decision.items_reopened} items re-opened"
            if decision.kind == "reject"
            else ""
        ),
    )
    return redirect("project-labellers", slug=slug)


@login_required
@require_safe
def labeller_detail(request: HttpRequest, slug: str, labeller_id: int) -> HttpResponse:
    """One labeller: figures, confusion matrix against the consensus, batches to reject."""
    project = engineer_project(request, slug)
    if isinstance(project, HttpResponse):
        return project
    labeller = (
        Labeller.objects.filter(pk=labeller_id, project=project).select_related("user").first()
    )
    if labeller is None:
        return render(request, "404.html", status=404)
    context = {
        "project": project,
        "labeller": labeller,
        "confusion": list(zip(project.labels, selectors.labeller_confusion(labeller), strict=True)),
        "batches": selectors.labeller_batches(labeller),
    }
    return render(request, "labelling/labeller.html", context)


@require_http_methods(["GET", "POST"])
def join(request: HttpRequest, token: str) -> HttpResponse:
    """Accept a sign-up link: choose a username and password, join the project, start labelling."""
    try:
        invitation = invitation_for(token)
    except QuorumError as exc:
        return render(
            request, "labelling/join.html", {"problem": exc.message}, status=exc.status_code
        )
    errors: dict[str, list[str]] = {}
    if request.method == "POST":
        username = request.POST.get("username", "").strip()
        try:
            labeller = invitation_accept(
                token=token, username=username, password=request.POST.get("password", "")
            )
        except QuorumError as exc:
            for error in exc.errors or []:
                errors.setdefault(error.field or "form", []).append(error.reason)
            if not exc.errors:
                errors["form"] = [exc.message]
        else:
            assert labeller.user is not None
            login(request, labeller.user, backend="django.contrib.auth.backends.ModelBackend")
            return redirect("label-page", slug=invitation.project.slug)
    context = {
        "invitation": invitation,
        "errors": errors,
        "username": request.POST.get("username", ""),
    }
    return render(request, "labelling/join.html", context, status=400 if errors else 200)
