"""Pages outside crowd workers see: the page Mechanical Turk frames, and the study link of
link-based platforms. Workers have no Quorum account: the platform's ids in the query string say
who they are, and the platform confirms their work (Mechanical Turk) or takes their completion
code (link-based)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlparse

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from core import security as csp
from core.exceptions import QuorumError
from labelling.crowd import services
from labelling.crowd.link import LinkPlatform
from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdTask
from labelling.crowd.platforms import platform_for
from labelling.rendering import instructions_html, label_buttons, payload_fields

PREVIEW = "ASSIGNMENT_ID_NOT_AVAILABLE"
MTURK_FIELDS = ("assignmentId", "hitId", "workerId", "turkSubmitTo")


def _duration(request: HttpRequest) -> int | None:
    raw = request.POST.get("duration_ms", "")
    return min(int(raw), 86_400_000) if raw.isascii() and raw.isdigit() else None


def _frame_headers(response: HttpResponse) -> HttpResponse:
    """Only Amazon's worker sites may frame the page (X-Frame-Options is off for it alone)."""
    hosts = " ".join(settings.MTURK_WORKER_HOSTS)
    # The saved answer is posted on to Amazon's externalSubmit: those sites are form targets too.
    response[csp.HEADER] = csp.policy(frame_ancestors=hosts, form_action=f"'self' {hosts}")
    response["Referrer-Policy"] = "no-referrer"
    return response


def submit_origin(turk_submit_to: str) -> str | None:
    """The origin to post the answer to, if it is one of Amazon's worker sites."""
    parsed = urlparse(turk_submit_to)
    origin = f"{parsed.scheme}://{parsed.netloc}"
    allowed = {host.rstrip("/") for host in settings.MTURK_WORKER_HOSTS}
    return origin if parsed.netloc and origin in allowed else None


def _task_context(task: CrowdTask) -> dict[str, Any]:
    project = task.batch.project
    buttons = label_buttons(list(project.labels))
    return {
        "project": project,
        "instructions": instructions_html(project.instructions),
        "fields": payload_fields(task.item.payload),
        "buttons": buttons,
    }


def _mturk_page(request: HttpRequest, context: dict[str, Any], status: int = 200) -> HttpResponse:
    return _frame_headers(render(request, "labelling/ext_mturk.html", context, status=status))


@csrf_exempt  # framed by Amazon in another site: no cookie comes; Amazon confirms the work
@xframe_options_exempt
@require_http_methods(["GET", "POST"])
def mturk_task(request: HttpRequest, slug: str) -> HttpResponse:
    """The HIT's page: preview, the task, and the answer saved here first, then sent to Amazon."""
    data = request.POST if request.method == "POST" else request.GET
    ids = {name: data.get(name, "").strip() for name in MTURK_FIELDS}
    try:
        task = services.task_for_hit(slug=slug, hit_id=ids["hitId"])
    except QuorumError as exc:
        return _mturk_page(request, {"problem": exc.message}, status=exc.status_code)
    preview = ids["assignmentId"] in ("", PREVIEW)
    context = {**_task_context(task), "ids": ids, "preview": preview, "show_task": True}
    origin = submit_origin(ids["turkSubmitTo"])
    if not context["preview"] and origin is None:
        context["problem"] = "This page must be opened from Mechanical Turk (unknown turkSubmitTo)."
        context["show_task"] = False
        return _mturk_page(request, context, status=400)
    context["submit_url"] = f"{origin}/mturk/externalSubmit"
    if context["preview"]:
        return _mturk_page(request, context)
    # Only this worker's own answer to this item is shown back to them.
    saved = CrowdAssignment.objects.filter(
        batch=task.batch, task=task, remote_id=ids["assignmentId"], worker_id=ids["workerId"]
    ).first()
    if saved is None and (
        not _may_work(task.batch, ids["workerId"]) or task.batch.status != CrowdBatch.Status.OPEN
    ):
        context["problem"] = "This task is no longer available to you. Please return the HIT."
        context["show_task"] = False
        return _mturk_page(request, context, status=403)
    if request.method == "POST":
        try:
            saved = services.crowd_mturk_answer(
                task=task, assignment_id=ids["assignmentId"], worker_id=ids["workerId"],
                answer=request.POST.get("label"), duration_ms=_duration(request),
            )  # fmt: skip
        except QuorumError as exc:
            context["problem"] = exc.report()
            return _mturk_page(request, context, status=exc.status_code)
    if saved is not None:
        # Saved in Quorum: now (again, on a reload) to Amazon, which confirms the work.
        return _mturk_page(request, {**context, "saved": saved})
    return _mturk_page(request, context)


def _may_work(batch: CrowdBatch, worker_id: str) -> bool:
    return services.worker_may_work(batch=batch, worker_id=worker_id)


@require_http_methods(["GET", "POST"])
def link_task(request: HttpRequest, slug: str, token: str) -> HttpResponse:
    """A link-based platform's study: items one after another, then the completion code."""
    try:
        batch = services.link_batch(slug=slug, token=token)
        adapter = platform_for(batch.platform)
    except QuorumError as exc:
        return render(request, "labelling/ext_link.html", {"problem": exc.message}, status=404)
    assert isinstance(adapter, LinkPlatform)
    p = adapter.params
    data = request.POST if request.method == "POST" else request.GET
    ids = {key: data.get(key, "").strip()[:200] for key in (p.worker, p.study, p.session)}
    context: dict[str, Any] = {"batch": batch, "project": batch.project, "ids": ids,
                               "platform": adapter}  # fmt: skip
    if not ids[p.worker] or not ids[p.session]:
        context["problem"] = f"Open this study from {p.title}: the link lacks your ids."
        return render(request, "labelling/ext_link.html", context, status=400)
    if request.method == "POST":
        try:
            services.crowd_link_answer(
                batch=batch, task_id=request.POST.get("task", ""), worker_id=ids[p.worker],
                session_id=ids[p.session], study_id=ids[p.study],
                answer=request.POST.get("label"), duration_ms=_duration(request),
            )  # fmt: skip
        except QuorumError as exc:
            context["problem"] = exc.report()
            return render(request, "labelling/ext_link.html", context, status=exc.status_code)
        return redirect(f"{request.path}?{urlencode(ids)}")
    return _link_page(request, batch, adapter, context)


def _link_page(
    request: HttpRequest, batch: CrowdBatch, adapter: LinkPlatform, context: dict[str, Any]
) -> HttpResponse:
    worker = context["ids"][adapter.params.worker]
    done = CrowdAssignment.objects.filter(batch=batch, worker_id=worker).count()
    context["done"] = done
    if batch.status != CrowdBatch.Status.OPEN:
        context["problem"] = "This study has ended."
        return render(request, "labelling/ext_link.html", context, status=410)
    if not services.worker_may_work(batch=batch, worker_id=worker):
        context["problem"] = "There is no more work for you in this study."
        context["finished"] = done > 0
        return _completion(request, batch, adapter, context)
    task = services.link_next_task(batch=batch, worker_id=worker)
    if task is None:
        context["finished"] = done > 0
        return _completion(request, batch, adapter, context)
    context.update(_task_context(task), task=task)
    return render(request, "labelling/ext_link.html", context)


def _completion(
    request: HttpRequest, batch: CrowdBatch, adapter: LinkPlatform, context: dict[str, Any]
) -> HttpResponse:
    """The completion code, only for a worker who did some work."""
    if context.get("finished"):
        context["code"] = batch.completion_code
        context["return_url"] = adapter.params.return_url.format(code=batch.completion_code)
    return render(request, "labelling/ext_link.html", context)
