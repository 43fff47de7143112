"""The problems page: model problems, every candidate's error on each, their patterns, and the
monitoring of a model version's predictions. Engineers and experts; crowd labellers get 403."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from core.exceptions import NotFound, QuorumError
from core.permissions import REVIEWERS, Role
from labelling import selectors
from labelling.forms import ModelVersionForm, ProblemForm
from labelling.models import Problem, Project
from labelling.problems import prediction_monitoring, problem_patterns, problems_report
from labelling.rendering import band_points, error_lines, series_points
from labelling.services.evaluation import model_version_update
from labelling.services.problems import ProblemChange, problem_create, problem_update
from labelling.views.access import project_page


def _reviewer_project(request: HttpRequest, slug: str) -> tuple[Project, Role] | HttpResponse:
    """The project and the user's role if they are an engineer or expert; 404 or 403 otherwise."""
    project = project_page(request, slug, REVIEWERS)
    if isinstance(project, HttpResponse):
        return project
    role = selectors.project_role(request.user, project)
    assert role is not None
    return project, role


def _change(form: ProblemForm) -> ProblemChange:
    """The form's fields as a change (a blank name, status or harm leaves it as it is)."""
    data = form.cleaned_data
    fields = {k: data[k] for k in ("name", "status") if data.get(k)}
    fields |= {k: data[k] for k in ("description", "reporter")}
    if data.get("harm") is not None:
        fields["harm"] = data["harm"]
    return ProblemChange(
        **fields, items=data["items"], patterns=data["patterns"], remove_items=data["remove_items"]
    )


def _monitoring(project: Project, version: str | None) -> dict[str, Any] | None:
    if not version:
        return None
    report = prediction_monitoring(project, version)
    days = report["days"]
    means = [d["mean_confidence"] for d in days]
    report["mean_points"] = series_points(means)
    report["band"] = band_points(
        [d["mean_confidence"] - d["std_confidence"] for d in days],
        [d["mean_confidence"] + d["std_confidence"] for d in days],
    )
    report["shift_points"] = series_points([d["shift"] or 0.0 for d in days])
    report["bound_y"] = (1 - min(report["bound"], 1.0)) * 160
    step = 480 / max(len(days) - 1, 1)
    for i, day in enumerate(days):
        day["x"], day["y"] = i * step, (1 - day["mean_confidence"]) * 160
    return report


@login_required
@require_http_methods(["GET", "POST"])
def problems_page(request: HttpRequest, slug: str) -> HttpResponse:
    """Problems by priority, the error of each across model versions, one problem's patterns."""
    found = _reviewer_project(request, slug)
    if isinstance(found, HttpResponse):
        return found
    project, role = found
    if request.method == "POST":
        return _post(request, project, role)
    report = problems_report(project)
    versions = [v["name"] for v in report["model_versions"]]
    for problem in report["problems"]:
        problem["cells"] = [problem["figures"].get(v) for v in versions]
    chosen = _chosen_problem(project, request.GET.get("problem"))
    monitored = request.GET.get("monitor") or (versions[-1] if versions else None)
    context = {
        "project": project,
        "report": report,
        "versions": versions,
        "lines": error_lines(versions, report["problems"]),
        "chosen": chosen,
        "patterns": problem_patterns(chosen) if chosen else None,
        "form": ProblemForm(initial={"harm": 1, "status": "open"}),
        "edit_form": _edit_form(chosen) if chosen else None,
        "is_engineer": role == Role.ENGINEER,
        "monitoring": _monitoring(project, monitored if monitored in versions else None),
        "test_cells": [report["test_split"].get(v) for v in versions],
        "x_step": 480 / max(len(versions) - 1, 1),
    }
    return render(request, "labelling/problems.html", context)


def _chosen_problem(project: Project, value: str | None) -> Problem | None:
    if not value or not (value.isascii() and value.isdigit()):
        return None
    return Problem.objects.select_related("project").filter(project=project, pk=int(value)).first()


def _edit_form(problem: Problem) -> ProblemForm:
    return ProblemForm(
        initial={
            "name": problem.name, "description": problem.description, "harm": problem.harm,
            "status": problem.status, "reporter": problem.reporter,
        }
    )  # fmt: skip


def _post(request: HttpRequest, project: Project, role: Role) -> HttpResponse:
    """Create or change a problem, or (engineers) describe a model version."""
    action = request.POST.get("action")
    target = redirect("project-problems", slug=project.slug)
    try:
        if action == "create":
            problem = _save(request, project, None)
        elif action == "update":
            chosen = _chosen_problem(project, request.POST.get("problem"))
            if chosen is None:
                raise NotFound("problem not found")
            problem = _save(request, project, chosen)
        elif action == "describe_version" and role == Role.ENGINEER:
            return _describe_version(request, project)
        else:
            return render(request, "403.html", {"message": "not allowed"}, status=403)
    except QuorumError as exc:
        messages.error(request, f"Nothing saved: {exc.report()}")
        return target
    target["Location"] += f"?problem={problem.pk}"
    return target


def _save(request: HttpRequest, project: Project, problem: Problem | None) -> Problem:
    form = ProblemForm(request.POST)
    if not form.is_valid():
        raise QuorumError(form.errors.as_text())
    change = _change(form)
    if problem is None:
        problem, queued = problem_create(project=project, user=request.user, change=change)
        messages.success(request, f"Problem “{problem.name}” created; {queued} pattern(s) queued.")
    else:
        problem, queued = problem_update(problem=problem, user=request.user, change=change)
        messages.success(request, f"Problem “{problem.name}” saved; {queued} pattern(s) queued.")
    return problem


def _describe_version(request: HttpRequest, project: Project) -> HttpResponse:
    form = ModelVersionForm(request.POST)
    if not form.is_valid():
        messages.error(request, f"Nothing saved: {form.errors.as_text()}")
    else:
        data = form.cleaned_data
        try:
            model_version_update(
                project=project, name=data["name"], note=data["note"], link=data["link"],
                git_hash=data["git_hash"],
            )  # fmt: skip
            messages.success(request, f"Model version {data['name']} described.")
        except QuorumError as exc:
            messages.error(request, f"Nothing saved: {exc.report()}")
    return redirect("project-problems", slug=project.slug)
