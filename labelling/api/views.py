"""REST API views: one view per operation, thin, with explicit input and output serializers."""

from __future__ import annotations

import io
import json

import orjson
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import InputError, InvalidInput
from core.permissions import ENGINEERS
from labelling.api.serializers import (
    ERROR_SCHEMA,
    ImportResultOutput,
    JobOutput,
    PredictionUploadInput,
    QueueInput,
    QueueResultOutput,
)
from labelling.importing.rows import detect_format
from labelling.models import Prediction, Project
from labelling.policy import parse_policy
from labelling.selectors import job_for_user, project_for_user
from labelling.services.imports import predictions_import
from labelling.services.jobs import job_import_start, job_queue_start
from labelling.services.queueing import queue_select


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
            "application/json": {"type": "array", "items": {"type": "object"}},
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
