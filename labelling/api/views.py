"""REST API views: one view per operation, thin, with explicit input and output serializers."""

from __future__ import annotations

import io

import orjson
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import JSONParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import InvalidInput
from core.permissions import ENGINEERS
from labelling.api.serializers import (
    ERROR_SCHEMA,
    ImportResultOutput,
    JobOutput,
    PredictionUploadInput,
)
from labelling.importing.rows import detect_format
from labelling.models import Project
from labelling.selectors import job_for_user, project_for_user
from labelling.services.imports import predictions_import
from labelling.services.jobs import job_import_start

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
            content = b"".join(orjson.dumps(row) + b"\n" for row in request.data)
            return self._import(request, project, content, "request.jsonl", "jsonl")
        form = PredictionUploadInput(data=request.data)
        if not form.is_valid():
            raise InvalidInput(
                "send a multipart form with a prediction file in `file`, or a JSON list of rows",
                errors=[],
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


class JobDetailView(APIView):
    """A background job's status, progress and result."""

    @extend_schema(operation_id="job_detail", responses={200: JobOutput, **ERRORS})
    def get(self, request: Request, job_id: int) -> Response:
        job = job_for_user(user=request.user, job_id=job_id, roles=ENGINEERS)
        return Response(JobOutput(job).data)
