"""REST API views: one view per operation, thin, with explicit input and output serializers."""

from __future__ import annotations

import io
import json
from typing import Any

import orjson
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import InputError, InvalidInput, NotFound
from core.permissions import ENGINEERS, LABELLERS, REVIEWERS
from core.text import unstorable
from core.throttling import FailOpenScopedRateThrottle
from labelling.api.serializers import (
    ERROR_SCHEMA,
    PREDICTION_ROW_SCHEMA,
    DecisionInput,
    DecisionOutput,
    EscalationListOutput,
    EscalationNextInput,
    EscalationOutput,
    EscalationQueryInput,
    ImportResultOutput,
    InvitationInput,
    InvitationOutput,
    JobOutput,
    LabelAndNextOutput,
    LabelInput,
    LeaseOutput,
    ModelVersionInput,
    ModelVersionOutput,
    PredictionUploadInput,
    ProblemInput,
    ProblemSavedOutput,
    ProblemsQueryInput,
    ProblemsReportOutput,
    QueueInput,
    QueueResultOutput,
    ReleaseDetailOutput,
    ReleaseInput,
    ReleaseOutput,
    ResolveInput,
    ResolveOutput,
    TaskOutput,
    label_body,
    next_body,
)
from labelling.importing.rows import detect_format
from labelling.models import Lease, ModelVersion, Prediction, Project, Release
from labelling.policy import parse_policy
from labelling.problems import (
    check_comparison,
    compare_versions,
    model_version_output,
    prediction_monitoring,
    problem_for_user,
    problems_report,
)
from labelling.releases.formats import CONTENT_TYPES
from labelling.releases.rows import Filters
from labelling.review import escalation_evidence, escalation_for_user, escalation_queue
from labelling.selectors import (
    job_for_user,
    labeller_for,
    labeller_managed_by,
    project_for_user,
    release_for_user,
    releases_of,
)
from labelling.services.evaluation import model_version_update
from labelling.services.imports import predictions_import
from labelling.services.invitations import invitation_create
from labelling.services.jobs import job_import_start, job_queue_start, job_release_start
from labelling.services.labellers import labeller_approve, labeller_block, labeller_reject
from labelling.services.leasing import (
    label_submit,
    label_undo,
    lease_next,
    lease_renew,
    lease_skip,
)
from labelling.services.problems import ProblemChange, problem_create, problem_update
from labelling.services.queueing import queue_select
from labelling.services.releases import (
    ReleaseRequest,
    release_chunks,
    release_download_url,
    release_request_validate,
)
from labelling.services.review import Decision, escalation_lease, escalation_resolve


def _json_line(row: object) -> bytes:
    """One JSON Lines line; rows orjson cannot write (lone surrogates) go through json, whose
    escapes then reach the importer's validator, which names the problem."""
    try:
        return orjson.dumps(row) + b"\n"
    except orjson.JSONEncodeError:
        return json.dumps(row).encode() + b"\n"


ERRORS = {code: OpenApiResponse(ERROR_SCHEMA) for code in (400, 401, 403, 404)}


class PredictionsImportView(APIView):
    """Import predictions: a multipart .jsonl/.csv file, or a JSON list of prediction rows."""

    parser_classes = [JSONParser, MultiPartParser]

    @extend_schema(
        operation_id="predictions_import",
        request={
            "multipart/form-data": PredictionUploadInput,
            "application/json": {"type": "array", "items": PREDICTION_ROW_SCHEMA},
        },
        responses={
            201: ImportResultOutput,
            202: OpenApiResponse(JobOutput, description="Large file: imported by a background job"),
            **ERRORS,
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=ENGINEERS)
        if isinstance(request.data, list):
            content = b"".join(_json_line(row) for row in request.data)
            return self._import(request, project, content, "request.jsonl", "jsonl")
        form = PredictionUploadInput(data=request.data)
        if not form.is_valid():
            raise InvalidInput(
                "send a multipart form with a prediction file in `file`, or a JSON list of rows",
                errors=[
                    InputError(str(message), field=field)
                    for field, messages in form.errors.items()
                    for message in messages
                ],
            )
        upload = form.validated_data["file"]
        fmt = detect_format(upload.name, form.validated_data.get("format"))
        return self._import(request, project, upload, upload.name, fmt)

    def _import(
        self,
        request: Request,
        project: Project,
        content: bytes | UploadedFile,
        filename: str,
        fmt: str,
    ) -> Response:
        size = len(content) if isinstance(content, bytes) else (content.size or 0)
        if size > settings.SYNC_IMPORT_MAX_BYTES:
            job = job_import_start(
                project=project, user=request.user, content=content, filename=filename, fmt=fmt
            )
            job.refresh_from_db()
            return Response(JobOutput(job).data, status=status.HTTP_202_ACCEPTED)
        stream = io.BytesIO(content) if isinstance(content, bytes) else content.open("rb")
        result = predictions_import(project=project, stream=stream, fmt=fmt)
        return Response(ImportResultOutput(result).data, status=status.HTTP_201_CREATED)


class QueueView(APIView):
    """Queue the project's predictions that need people, by a given or the current policy."""

    @extend_schema(
        operation_id="queue_select",
        request=QueueInput,
        responses={
            200: QueueResultOutput,
            202: OpenApiResponse(
                JobOutput, description="Large project: queued by a background job"
            ),
            **ERRORS,
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=ENGINEERS)
        form = QueueInput(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        policy = (
            parse_policy(data["policy"], budget=data.get("budget")) if "policy" in data else None
        )
        if (
            Prediction.objects.filter(item__project=project).count()
            > settings.SYNC_QUEUE_MAX_PREDICTIONS
        ):
            job = job_queue_start(
                project=project,
                user=request.user,
                policy=policy.as_json() if policy else None,
                budget=data.get("budget"),
                model_version=data.get("model_version"),
            )
            job.refresh_from_db()
            return Response(JobOutput(job).data, status=status.HTTP_202_ACCEPTED)
        result = queue_select(
            project=project,
            policy=policy,
            budget=data.get("budget"),
            model_version=data.get("model_version"),
            user=request.user,
        )
        return Response(QueueResultOutput(result).data)


class JobDetailView(APIView):
    """A background job's status, progress and result."""

    @extend_schema(operation_id="job_detail", responses={200: JobOutput, **ERRORS})
    def get(self, request: Request, job_id: int) -> Response:
        job = job_for_user(user=request.user, job_id=job_id, roles=ENGINEERS)
        return Response(JobOutput(job).data)


class NextTaskView(APIView):
    """Lease the next item for this labeller: a hidden gold check at the project's rate, else the
    most urgent item that still needs labels and that they have not labelled or skipped."""

    @extend_schema(
        operation_id="task_next",
        responses={
            200: TaskOutput,
            204: OpenApiResponse(description="Nothing left for you"),
            **ERRORS,
        },
    )
    def get(self, request: Request, slug: str) -> Response:
        project, labeller = labeller_for(user=request.user, slug=slug, roles=LABELLERS)
        lease = lease_next(project=project, labeller=labeller)
        if lease is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(TaskOutput(lease).data)


class LabelSubmitView(APIView):
    """Answer a leased item. Repeating the same call returns the first answer."""

    throttle_classes = [FailOpenScopedRateThrottle]
    throttle_scope = "labels"

    @extend_schema(
        operation_id="lease_label",
        request=LabelInput,
        responses={
            201: LabelAndNextOutput,
            409: OpenApiResponse(ERROR_SCHEMA),
            429: OpenApiResponse(ERROR_SCHEMA, description="Too many answers: wait and retry"),
            **ERRORS,
        },
    )
    def post(self, request: Request, lease_id: int) -> Response:
        form = LabelInput(data=request.data)
        form.is_valid(raise_exception=True)
        submitted = label_submit(
            lease_id=lease_id,
            user=request.user,
            value=form.validated_data["label"],
            duration_ms=form.validated_data.get("duration_ms"),
            source="web" if request.auth is None else "api",
        )
        body = label_body(submitted.label)
        if form.validated_data["next"]:
            project_id = submitted.label.project_id
            body |= next_body(lambda: lease_next_in(user=request.user, project_id=project_id))
        return Response(body, status=status.HTTP_201_CREATED)


def lease_next_in(*, user: Any, project_id: int) -> Lease | None:
    """What tasks/next gives this user in the project of the answer they just gave."""
    slug = Project.objects.values_list("slug", flat=True).get(pk=project_id)
    project, labeller = labeller_for(user=user, slug=slug, roles=LABELLERS)
    return lease_next(project=project, labeller=labeller)


class LeaseSkipView(APIView):
    """Give the item back; it is not offered to this labeller again."""

    @extend_schema(
        operation_id="lease_skip",
        request=None,
        responses={200: LeaseOutput, 409: OpenApiResponse(ERROR_SCHEMA), **ERRORS},
    )
    def post(self, request: Request, lease_id: int) -> Response:
        return Response(LeaseOutput(lease_skip(lease_id=lease_id, user=request.user)).data)


class LeaseHeartbeatView(APIView):
    """Keep a lease open while the labeller works on it."""

    @extend_schema(
        operation_id="lease_heartbeat",
        request=None,
        responses={200: LeaseOutput, 409: OpenApiResponse(ERROR_SCHEMA), **ERRORS},
    )
    def post(self, request: Request, lease_id: int) -> Response:
        return Response(LeaseOutput(lease_renew(lease_id=lease_id, user=request.user)).data)


class LabelUndoView(APIView):
    """Take back the answer given on this lease while it is still open; the lease reopens."""

    @extend_schema(
        operation_id="lease_undo",
        request=None,
        responses={200: TaskOutput, 409: OpenApiResponse(ERROR_SCHEMA), **ERRORS},
    )
    def post(self, request: Request, lease_id: int) -> Response:
        return Response(TaskOutput(label_undo(lease_id=lease_id, user=request.user)).data)


class InvitationCreateView(APIView):
    """Create a sign-up link that makes whoever follows it a labeller of the project."""

    @extend_schema(
        operation_id="invitation_create",
        request=InvitationInput,
        responses={201: InvitationOutput, **ERRORS},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=ENGINEERS)
        form = InvitationInput(data=request.data)
        form.is_valid(raise_exception=True)
        invitation = invitation_create(project=project, user=request.user, **form.validated_data)
        return Response(InvitationOutput(invitation).data, status=status.HTTP_201_CREATED)


class LabellerDecisionView(APIView):
    """Base of the engineer's decisions about a labeller; each is kept in an audit log."""

    def decide(self, request: Request, labeller_id: int) -> Response:
        labeller = labeller_managed_by(user=request.user, labeller_id=labeller_id)
        form = DecisionInput(data=request.data)
        form.is_valid(raise_exception=True)
        decision = self.apply(labeller, request.user, form.validated_data)
        return Response(DecisionOutput(decision).data)

    def apply(self, labeller: Any, user: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError


class LabellerRejectView(LabellerDecisionView):
    """Void the labeller's labels (all, or one batch), re-open the affected items, recompute."""

    @extend_schema(
        operation_id="labeller_reject",
        request=DecisionInput,
        responses={200: DecisionOutput, **ERRORS},
    )
    def post(self, request: Request, labeller_id: int) -> Response:
        return self.decide(request, labeller_id)

    def apply(self, labeller: Any, user: Any, data: dict[str, Any]) -> Any:
        return labeller_reject(
            labeller=labeller, user=user, reason=data["reason"], batch=data["batch"]
        )


class LabellerApproveView(LabellerDecisionView):
    """Let a paused labeller work again."""

    @extend_schema(
        operation_id="labeller_approve",
        request=DecisionInput,
        responses={200: DecisionOutput, 409: OpenApiResponse(ERROR_SCHEMA), **ERRORS},
    )
    def post(self, request: Request, labeller_id: int) -> Response:
        return self.decide(request, labeller_id)

    def apply(self, labeller: Any, user: Any, data: dict[str, Any]) -> Any:
        return labeller_approve(labeller=labeller, user=user, reason=data["reason"])


class LabellerBlockView(LabellerDecisionView):
    """Stop all future work of the labeller in the project."""

    @extend_schema(
        operation_id="labeller_block",
        request=DecisionInput,
        responses={200: DecisionOutput, **ERRORS},
    )
    def post(self, request: Request, labeller_id: int) -> Response:
        return self.decide(request, labeller_id)

    def apply(self, labeller: Any, user: Any, data: dict[str, Any]) -> Any:
        return labeller_block(labeller=labeller, user=user, reason=data["reason"])


class EscalationListView(APIView):
    """The project's open escalations, most urgent first, with every crowd label, the labellers'
    reliability, the consensus posterior and the model's prediction."""

    @extend_schema(
        operation_id="escalations_list",
        parameters=[EscalationQueryInput],
        responses={200: EscalationListOutput, **ERRORS},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=REVIEWERS)
        form = EscalationQueryInput(data=request.query_params)
        form.is_valid(raise_exception=True)
        reason, limit, offset = (form.validated_data.get(k) for k in ("reason", "limit", "offset"))
        queue = escalation_queue(project, reason).select_related("project", "leased_to")
        page = list(queue[offset : offset + limit])
        count = queue.count()
        more = offset + limit < count
        body = {
            "count": count,
            "next": self._next_url(request, offset + limit) if more else None,
            "results": escalation_evidence(page),
        }
        return Response(EscalationListOutput(body).data)

    def _next_url(self, request: Request, offset: int) -> str:
        query = request.query_params.copy()
        query["offset"] = str(offset)
        return f"{request.path}?{query.urlencode()}"


class EscalationNextView(APIView):
    """Lease the most urgent open escalation to this expert (the one they hold comes back
    first): `204` when none is left. Two experts never hold the same escalation."""

    @extend_schema(
        operation_id="escalation_next",
        parameters=[EscalationNextInput],
        responses={
            200: EscalationOutput,
            204: OpenApiResponse(description="No escalation waits"),
            **ERRORS,
        },
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=REVIEWERS)
        form = EscalationNextInput(data=request.query_params)
        form.is_valid(raise_exception=True)
        escalation = escalation_lease(
            project=project, user=request.user, reason=form.validated_data.get("reason")
        )
        if escalation is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(EscalationOutput(escalation_evidence([escalation])[0]).data)


class EscalationResolveView(APIView):
    """The expert's final decision: `{"label": "match", "note": "…"}`, `{"action": "remove"}`,
    `{"action": "send_back", "note": "…"}` or `{"action": "gold", "label": "match"}`."""

    @extend_schema(
        operation_id="escalation_resolve",
        request=ResolveInput,
        responses={200: ResolveOutput, 409: OpenApiResponse(ERROR_SCHEMA), **ERRORS},
    )
    def post(self, request: Request, escalation_id: int) -> Response:
        escalation_for_user(user=request.user, escalation_id=escalation_id, roles=REVIEWERS)
        form = ResolveInput(data=request.data)
        form.is_valid(raise_exception=True)
        resolved = escalation_resolve(
            escalation_id=escalation_id, user=request.user, decision=Decision(**form.validated_data)
        )
        return Response(ResolveOutput(resolved).data)


def _download_urls(request: Request, releases: list[Release]) -> dict[int, str]:
    return {
        r.pk: release_download_url(
            release=r, streamed_url=request.build_absolute_uri(f"/api/v1/releases/{r.pk}/download")
        )
        for r in releases
    }


class ReleasesView(APIView):
    """A project's releases (GET), or freeze the next one as a background job (POST)."""

    @extend_schema(
        operation_id="releases_list", responses={200: ReleaseOutput(many=True), **ERRORS}
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=ENGINEERS)
        releases = releases_of(project)
        context = {"download_urls": _download_urls(request, releases)}
        return Response(ReleaseOutput(releases, many=True, context=context).data)

    @extend_schema(
        operation_id="release_create",
        request=ReleaseInput,
        responses={202: OpenApiResponse(JobOutput, description="The release job"), **ERRORS},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=ENGINEERS)
        form = ReleaseInput(data=request.data)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        release_request = ReleaseRequest(
            fmt=data["format"],
            filters=Filters(
                since_last=data["since_last"], split=data["split"], source=data["source"]
            ),
            override_reason=data["override_reason"],
            override_checks=tuple(data["override_checks"]) if data["override_checks"] else None,
            include_personal=data["include_personal"],
        )
        release_request_validate(release_request)
        job = job_release_start(
            project=project, user=request.user, params=release_request.as_params()
        )
        job.refresh_from_db()
        return Response(JobOutput(job).data, status=status.HTTP_202_ACCEPTED)


class ReleaseDetailView(APIView):
    """A release's manifest and where to download its data file."""

    @extend_schema(operation_id="release_detail", responses={200: ReleaseDetailOutput, **ERRORS})
    def get(self, request: Request, release_id: int) -> Response:
        release = release_for_user(user=request.user, release_id=release_id, roles=ENGINEERS)
        context = {"download_urls": _download_urls(request, [release])}
        return Response(ReleaseDetailOutput(release, context=context).data)


class ReleaseDownloadView(APIView):
    """The release's data file, streamed from its storage to an engineer of the project."""

    @extend_schema(
        operation_id="release_download",
        responses={200: OpenApiResponse(description="The data file"), **ERRORS},
    )
    def get(self, request: Request, release_id: int) -> StreamingHttpResponse:
        release = release_for_user(user=request.user, release_id=release_id, roles=ENGINEERS)
        chunks = release_chunks(release=release)
        first = next(chunks, b"")  # a missing file answers 404 here, before the headers go out
        response = StreamingHttpResponse(
            _prepend(first, chunks), content_type=CONTENT_TYPES[release.format]
        )
        name = f"{release.project.slug}-v{release.version}.{release.data_file.rsplit('.', 1)[-1]}"
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        response["Content-Length"] = str(release.size_bytes)
        response["X-Content-SHA256"] = release.sha256
        return response


def _prepend(first: bytes, rest: Any) -> Any:
    yield first
    yield from rest


def _problem_change(data: dict[str, Any]) -> ProblemChange:
    lists = {key: data[key] for key in ("items", "patterns", "remove_items") if key in data}
    fields = {
        key: data[key]
        for key in ("name", "description", "harm", "status", "reporter")
        if key in data
    }
    return ProblemChange(**fields, **lists)


def _problem_body(problem: Any) -> dict[str, Any]:
    """A problem as the report shows it, after its figures were refreshed."""
    report = problems_report(problem.project)
    return next(p for p in report["problems"] if p["id"] == problem.pk)


class ProblemsView(APIView):
    """GET: every problem with each model version's figures on the latest trusted labels
    (optionally a candidate compared with the deployed model); POST: describe a new problem."""

    @extend_schema(
        operation_id="problems_list",
        parameters=[ProblemsQueryInput],
        responses={200: ProblemsReportOutput, **ERRORS},
    )
    def get(self, request: Request, slug: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=REVIEWERS)
        form = ProblemsQueryInput(data=request.query_params)
        form.is_valid(raise_exception=True)
        data = form.validated_data
        report = problems_report(project)
        if "candidate" in data:
            candidate, deployed, harm = check_comparison(
                report, data["candidate"], data["deployed"], data["min_harm"]
            )
            report["comparison"] = compare_versions(
                report, candidate=candidate, deployed=deployed, min_harm=harm
            ).as_dict()
        return Response(ProblemsReportOutput(report).data)

    @extend_schema(
        operation_id="problem_create",
        request=ProblemInput,
        responses={201: ProblemSavedOutput, **ERRORS},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=REVIEWERS)
        form = ProblemInput(data=request.data)
        form.is_valid(raise_exception=True)
        if "remove_items" in form.validated_data:
            raise InvalidInput(
                "invalid problem",
                errors=[InputError("only when changing a problem", "remove_items")],
            )
        problem, queued = problem_create(
            project=project, user=request.user, change=_problem_change(form.validated_data)
        )
        body = {"problem": _problem_body(problem), "queued": queued}
        return Response(ProblemSavedOutput(body).data, status=status.HTTP_201_CREATED)


class ProblemUpdateView(APIView):
    """Change a problem: its description, harm, status, and patterns added or removed."""

    @extend_schema(
        operation_id="problem_update",
        request=ProblemInput,
        responses={200: ProblemSavedOutput, **ERRORS},
    )
    def patch(self, request: Request, problem_id: int) -> Response:
        problem = problem_for_user(user=request.user, problem_id=problem_id, roles=REVIEWERS)
        form = ProblemInput(data=request.data)
        form.is_valid(raise_exception=True)
        problem, queued = problem_update(
            problem=problem, user=request.user, change=_problem_change(form.validated_data)
        )
        body = {"problem": _problem_body(problem), "queued": queued}
        return Response(ProblemSavedOutput(body).data)


class ModelVersionUpdateView(APIView):
    """Describe a candidate model: a note, a link to its code and data, its git hash."""

    @extend_schema(
        operation_id="model_version_update",
        request=ModelVersionInput,
        responses={200: ModelVersionOutput, **ERRORS},
    )
    def patch(self, request: Request, slug: str, name: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=ENGINEERS)
        form = ModelVersionInput(data=request.data)
        form.is_valid(raise_exception=True)
        version = model_version_update(project=project, name=name, **form.validated_data)
        return Response(ModelVersionOutput(model_version_output(version)).data)


class MonitoringView(APIView):
    """Per day, a model version's mean and spread of top confidence and predicted class
    distribution, and whether it moved beyond the bound from the training-time one."""

    @extend_schema(operation_id="prediction_monitoring", responses={200: dict, **ERRORS})
    def get(self, request: Request, slug: str, name: str) -> Response:
        project = project_for_user(user=request.user, slug=slug, roles=REVIEWERS)
        # A name the database cannot hold (from a URL with %00) names no version.
        known = unstorable(name) is None
        if not known or not ModelVersion.objects.filter(project=project, name=name).exists():
            raise NotFound(f"no model version {name!r} in the project's predictions")
        return Response(prediction_monitoring(project, name))
