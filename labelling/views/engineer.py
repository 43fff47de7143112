"""The engineer's pages: projects, dashboard, threshold. Views fetch through selectors and
hold no decisions."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from core.exceptions import InvalidInput, NotFound, PermissionDenied
from core.permissions import ENGINEERS
from labelling import selectors
from labelling.crowd.selectors import crowd_summary
from labelling.forms import ApplyThresholdForm, ReleaseForm, ThresholdGoalsForm
from labelling.models import Project
from labelling.releases.rows import Filters
from labelling.rendering import curve_points, histogram_bars, payload_fields
from labelling.review import review_statistics
from labelling.services.jobs import job_live_progress, job_release_start
from labelling.services.releases import ReleaseRequest, release_request_validate
from labelling.services.thresholds import project_threshold_set
from labelling.thresholding import Goals, threshold_report


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The projects this user works on."""
    return render(
        request, "labelling/home.html", {"memberships": selectors.projects_for_user(request.user)}
    )


def engineer_project(request: HttpRequest, slug: str) -> Project | HttpResponse:
    """The project if the user is one of its engineers; a 404 or a 403 page otherwise."""
    try:
        return selectors.project_for_user(user=request.user, slug=slug, roles=ENGINEERS)
    except NotFound:
        raise Http404("project not found") from None
    except PermissionDenied as exc:
        return render(request, "403.html", {"message": exc.message}, status=403)


@login_required
def project_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    """The engineer's view of a project: what came in and what the model is unsure of."""
    project = engineer_project(request, slug)
    if isinstance(project, HttpResponse):
        return project
    version = selectors.latest_model_version(project)
    doubtful = selectors.least_confident_predictions(project, version) if version else []
    everything = selectors.confidence_histogram(project, version) if version else []
    queued = selectors.confidence_histogram(project, version, queued_only=True) if version else []
    context = {
        "project": project,
        "overview": selectors.project_overview(project),
        "version": version,
        "bars": histogram_bars(everything),
        "queued_bars": histogram_bars(queued, tallest=max(everything, default=0)),
        "queue": selectors.queue_overview(project),
        "doubtful": [(p, payload_fields(p.item.payload)) for p in doubtful],
        "review": review_statistics(project),
        "releases": selectors.releases_of(project)[:5],
        "crowd": crowd_summary(project),
    }
    return render(request, "labelling/project_dashboard.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def project_threshold(request: HttpRequest, slug: str) -> HttpResponse:
    """ROC and precision-recall curves on trusted labels, suggested thresholds, and applying one."""
    project = engineer_project(request, slug)
    if isinstance(project, HttpResponse):
        return project
    version = request.POST.get("model_version") or request.GET.get("model_version")
    version = version or selectors.latest_model_version(project)
    if request.method == "POST":
        return _apply_threshold(request, project, version)
    goals_form = ThresholdGoalsForm(request.GET or {"cost_fp": 1, "cost_fn": 1})
    report = None
    if version and goals_form.is_valid():
        report = threshold_report(project, version, Goals(**goals_form.cleaned_data))
    context = {
        "project": project,
        "version": version,
        "goals_form": goals_form,
        "report": report,
        "roc_points": curve_points(report.roc) if report else "",
        "pr_points": curve_points(report.pr) if report else "",
        "history": project.threshold_changes.select_related("changed_by")[:20],
    }
    return render(request, "labelling/threshold.html", context)


def _apply_threshold(request: HttpRequest, project: Project, version: str | None) -> HttpResponse:
    form = ApplyThresholdForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Threshold not changed: {form.errors.as_text()}")
        return redirect("project-threshold", slug=project.slug)
    change = project_threshold_set(
        project=project,
        threshold=form.cleaned_data["threshold"],
        model_version=version,
        user=request.user,
        note=form.cleaned_data["note"],
    )
    messages.success(
        request, f"Threshold changed from {change.old_threshold:g} to {change.new_threshold:g}."
    )
    return redirect("project-threshold", slug=project.slug)


@login_required
@require_http_methods(["GET", "POST"])
def project_releases(request: HttpRequest, slug: str) -> HttpResponse:
    """The project's releases, their data checks, the release jobs' progress, and a new release."""
    project = engineer_project(request, slug)
    if isinstance(project, HttpResponse):
        return project
    form = ReleaseForm(request.POST or None)
    if request.method == "POST":
        created = _start_release(request, project, form)
        if created:
            return redirect("project-releases", slug=project.slug)
    jobs = [(job, round(job_live_progress(job) * 100)) for job in selectors.release_jobs(project)]
    context = {
        "project": project,
        "form": form,
        "releases": selectors.releases_of(project),
        "jobs": jobs,
        "busy": any(job.status in ("queued", "running") for job, _ in jobs),
    }
    return render(request, "labelling/releases.html", context)


def _start_release(request: HttpRequest, project: Project, form: ReleaseForm) -> bool:
    if not form.is_valid():
        return False
    data = form.cleaned_data
    release_request = ReleaseRequest(
        fmt=data["format"],
        filters=Filters(
            since_last=data["since_last"],
            split=data["split"] or None,
            source=data["source"] or None,
        ),
        override_reason=data["override_reason"],
        override_checks=tuple(data["override_checks"]) or None,
        include_personal=data["include_personal"],
    )
    try:
        release_request_validate(release_request)
    except InvalidInput as exc:
        for error in exc.errors:
            form.add_error(error.field if error.field in form.fields else None, error.reason)
        return False
    job_release_start(project=project, user=request.user, params=release_request.as_params())
    messages.success(request, "The release is being built; this page shows its progress.")
    return True
