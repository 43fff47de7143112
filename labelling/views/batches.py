"""The engineer's outside-crowd page: publish a batch (cost estimate first), each batch's status,
the account balance, and the pay or refuse decisions still to be carried out."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from core.exceptions import QuorumError
from labelling.crowd import selectors as crowd_selectors
from labelling.crowd import services
from labelling.crowd.link import LinkPlatform
from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdBlock
from labelling.crowd.platforms import PLATFORMS, platform_for
from labelling.models import Project
from labelling.views.engineer import engineer_project


def _publish_fields(request: HttpRequest, project: Project) -> dict[str, Any]:
    options = services.crowd_options(project)
    data = request.POST
    return {
        "platform": data.get("platform", "mturk"),
        "size": data.get("size", "") or "100",
        "reward": data.get("reward", "") or str(options["reward"]),
        "assignments": data.get("assignments", "") or str(options["assignments"]),
    }


@login_required
@require_http_methods(["GET", "POST"])
def project_crowd(request: HttpRequest, slug: str) -> HttpResponse:
    """Outside crowds of a project: publish, batches, balance, pending decisions."""
    project = engineer_project(request, slug)
    if isinstance(project, HttpResponse):
        return project
    fields = _publish_fields(request, project)
    estimate = None
    action = request.POST.get("action", "")
    if request.method == "POST" and action != "estimate":
        return _act(request, project, action, fields)
    if action == "estimate":
        try:
            estimate = services.crowd_estimate(project=project, **fields)
        except QuorumError as exc:
            messages.error(request, f"No estimate: {exc.report()}")
    return render(request, "labelling/crowd.html", _context(project, fields, estimate))


def _context(project: Project, fields: dict[str, Any], estimate: Any) -> dict[str, Any]:
    batches = crowd_selectors.batches_overview(project)
    links = {}
    for batch in batches:
        adapter = platform_for(batch.platform)
        if isinstance(adapter, LinkPlatform):
            links[batch.pk] = adapter.link(batch)
    return {
        "project": project,
        "fields": fields,
        "estimate": estimate,
        "platforms": [(name, platform_for(name).title) for name in PLATFORMS],
        "available": services.crowd_items_available(project).count(),
        "batches": [(batch, links.get(batch.pk, "")) for batch in batches],
        "pending": crowd_selectors.pending_decisions(project),
        "blocks": crowd_selectors.pending_blocks(project),
    }


def _batch(request: HttpRequest, project: Project) -> CrowdBatch:
    raw = request.POST.get("batch", "")
    batch = CrowdBatch.objects.filter(
        project=project, pk=int(raw) if raw.isascii() and raw.isdigit() else 0
    ).first()
    if batch is None:
        raise QuorumError("choose a batch of this project")
    return batch


def _assignment(request: HttpRequest, project: Project) -> CrowdAssignment:
    raw = request.POST.get("assignment", "")
    found = CrowdAssignment.objects.select_related("batch").filter(
        batch__project=project, pk=int(raw) if raw.isascii() and raw.isdigit() else 0
    )
    if (assignment := found.first()) is None:
        raise QuorumError("choose an assignment of this project")
    return assignment


def _publish(request: HttpRequest, project: Project, fields: dict[str, Any]) -> str:
    # The engineer publishes at the cost they were shown, or not at all.
    estimate = services.crowd_estimate(project=project, **fields)
    if request.POST.get("total", "") != str(estimate.total):
        raise QuorumError(
            f"Nothing published: the cost is now ${estimate.total}; estimate it again first."
        )
    batch = services.crowd_batch_create(project=project, user=request.user, **fields)
    services.crowd_batch_publish(batch=batch)
    return f"Batch {batch.pk} published: {batch.tasks.count()} items on {batch.platform}."


def _retry(request: HttpRequest, project: Project, fields: dict[str, Any]) -> str:
    batch = services.crowd_batch_publish(batch=_batch(request, project))
    return f"Batch {batch.pk} published."


def _sync(request: HttpRequest, project: Project, fields: dict[str, Any]) -> str:
    batch = _batch(request, project)
    new = services.crowd_batch_sync(batch=batch)
    result = services.crowd_batch_settle(batch=batch)
    return _settled(f"Batch {batch.pk}: {new} new answers", result)


def _settled(head: str, result: services.SettleResult) -> str:
    text = (
        f"{head}; {result.paid} to pay, {result.refused} to refuse, {result.blocked} blocked, "
        f"{result.waiting} waiting for a decision on their labeller."
    )
    if result.errors:
        raise QuorumError(text + " The platform refused: " + "; ".join(result.errors))
    return text


def _close(request: HttpRequest, project: Project, fields: dict[str, Any]) -> str:
    batch = _batch(request, project)
    return _settled(f"Batch {batch.pk} closed", services.crowd_batch_close(batch=batch))


def _balance(request: HttpRequest, project: Project, fields: dict[str, Any]) -> str:
    platform = request.POST.get("platform", "mturk")
    balance = services.crowd_balance(platform=platform)
    title = platform_for(platform).title
    if balance is None:
        return f"{title} does not report a balance; see the account on its site."
    return f"{title} balance available: ${balance}."


def _applied(request: HttpRequest, project: Project, fields: dict[str, Any]) -> str:
    assignment = services.crowd_decision_applied(assignment=_assignment(request, project))
    return f"Assignment {assignment.remote_id}: {assignment.status} on the platform."


def _block_applied(request: HttpRequest, project: Project, fields: dict[str, Any]) -> str:
    raw = request.POST.get("block", "")
    block = CrowdBlock.objects.filter(
        project=project, pk=int(raw) if raw.isascii() and raw.isdigit() else 0
    ).first()
    if block is None:
        raise QuorumError("choose a block of this project")
    services.crowd_block_applied(block=block)
    return f"{block.worker_id} is blocked."


def _bonus(request: HttpRequest, project: Project, fields: dict[str, Any]) -> str:
    assignment = _assignment(request, project)
    sent = services.crowd_bonus_send(
        assignment=assignment,
        amount=request.POST.get("amount", ""),
        reason=request.POST.get("reason", ""),
    )
    where = "sent" if sent else "recorded: pay it on the platform"
    return f"Bonus of ${assignment.bonus} to {assignment.worker_id} {where}."


ACTIONS: dict[str, Callable[[HttpRequest, Project, dict[str, Any]], str]] = {
    "publish": _publish, "retry": _retry, "sync": _sync, "close": _close, "balance": _balance,
    "applied": _applied, "block_applied": _block_applied, "bonus": _bonus,
}  # fmt: skip


def _act(
    request: HttpRequest, project: Project, action: str, fields: dict[str, Any]
) -> HttpResponse:
    if action not in ACTIONS:
        messages.error(request, "Nothing done: unknown action.")
        return redirect("project-crowd", slug=project.slug)
    try:
        messages.success(request, ACTIONS[action](request, project, fields))
    except QuorumError as exc:
        messages.error(request, f"{exc.report()}")
    return redirect("project-crowd", slug=project.slug)
