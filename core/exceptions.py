"""Domain errors, and the one handler that maps them to HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler

from core.text import printable

logger = logging.getLogger("quorum.errors")


@dataclass(frozen=True)
class InputError:
    """One problem in user input: where it is (line, field) and why it is wrong."""

    reason: str
    field: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        where += [f"field {printable(self.field)}"] if self.field else []
        reason = printable(self.reason)
        return f"{', '.join(where)}: {reason}" if where else reason

    def as_dict(self) -> dict[str, Any]:
        """The error as the API shows it (field names and reasons may quote what was sent)."""
        return {"line": self.line, "field": printable(self.field), "reason": printable(self.reason)}


class QuorumError(Exception):
    """Base of every error a user can cause; carries an HTTP status for the API."""

    status_code = 400
    code = "error"

    def __init__(
        self, message: str, *, errors: Sequence[InputError] = (), total_errors: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.errors = list(errors)
        # Long files can hold thousands of errors; we keep the first ones and count the rest.
        self.total_errors = total_errors if total_errors is not None else len(self.errors)

    def as_dict(self) -> dict[str, Any]:
        """The error as the API shows it."""
        body: dict[str, Any] = {"detail": printable(self.message), "code": self.code}
        if self.errors:
            body["errors"] = [error.as_dict() for error in self.errors]
            body["total_errors"] = self.total_errors
        return body

    def report(self) -> str:
        """The error as the command line prints it, one problem a line."""
        lines = [printable(self.message)] + [f"  {error}" for error in self.errors]
        if self.total_errors > len(self.errors):
            lines.append(f"  … and {self.total_errors - len(self.errors)} more errors")
        return "\n".join(lines)


class InvalidInput(QuorumError):
    """Input that breaks a rule: nothing was written."""

    code = "invalid_input"


class NotFound(QuorumError):
    """The object does not exist, or the user may not know it does."""

    status_code = 404
    code = "not_found"


class PermissionDenied(QuorumError):
    """The user is known to the project but their role does not allow this."""

    status_code = 403
    code = "permission_denied"


class Conflict(QuorumError):
    """The request clashes with the current state (an expired lease, a finished job…)."""

    status_code = 409
    code = "conflict"


class StorageError(QuorumError):
    """The release store (a folder or S3) refused or could not be reached: nothing was kept."""

    status_code = 503
    code = "storage_error"


# PostgreSQL's SQLSTATEs of a lost or refused connection: class 08 (connection exception), an
# administrator's or a crash's shutdown of the backend, a server starting up, too many clients.
_LOST_CONNECTION_STATES = ("08", "57P01", "57P02", "57P03", "53300")
_BUSY_SQLITE = {"SQLITE_BUSY", "SQLITE_LOCKED"}
# How long a client should wait before trying again once the database was unavailable.
RETRY_AFTER_SECONDS = 5
DATABASE_UNAVAILABLE = {
    "detail": "the database is unavailable for a moment; nothing was changed, try again shortly",
    "code": "database_unavailable",
}


def database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` is the database being out of reach (a dropped connection, a server restart,
    SQLite's lock held too long), not a bug in a query: such a request can simply be retried."""
    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    cause = exc.__cause__
    name = getattr(cause, "sqlite_errorname", None)
    if name is not None:
        return name in _BUSY_SQLITE
    state = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    # No SQLSTATE: the driver itself found the connection closed or could not open it.
    return state is None or str(state).startswith(_LOST_CONNECTION_STATES)


def database_unavailable_response() -> Response:
    """The API's answer while the database is out of reach: 503 with Retry-After."""
    response = Response(DATABASE_UNAVAILABLE, status=503)
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map every refused request to its status and one body shape: `detail`, `code` and, for
    invalid input, `errors` naming each field; a lost database to 503 with Retry-After. Anything
    else is a server error (a bug)."""
    if isinstance(exc, QuorumError):
        return Response(exc.as_dict(), status=exc.status_code)
    if database_unavailable(exc):
        logger.warning("database unavailable: %s", exc)
        return database_unavailable_response()
    response = exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, drf.ValidationError):
        errors = _field_errors(exc.detail)
        first = f": {errors[0]}" if errors else ""
        response.data = InvalidInput(f"the request is invalid{first}", errors=errors).as_dict()
    elif isinstance(exc, drf.APIException):
        code = exc.get_codes()
        response.data = {
            "detail": printable(str(exc.detail)),
            "code": code if isinstance(code, str) else exc.default_code,
        }
    return response


def _field_errors(detail: Any, field: str = "") -> list[InputError]:
    """DRF's nested {field: [messages]} as flat errors with dotted field names."""
    if isinstance(detail, dict):
        return [
            error
            for key, value in detail.items()
            for error in _field_errors(value, _join(field, key))
        ]
    if isinstance(detail, list):
        # A list field's errors come as one entry per element, empty where the element is fine.
        nested = any(isinstance(item, dict | list) for item in detail)
        return [
            error
            for index, item in enumerate(detail)
            for error in _field_errors(item, f"{field}[{index}]" if nested else field)
        ]
    return [InputError(str(detail), field=field)]


def _join(field: str, key: object) -> str:
    if isinstance(key, int):
        return f"{field}[{key}]"
    name = "" if key == api_settings.NON_FIELD_ERRORS_KEY else str(key)
    return f"{field}.{name}" if field and name else field or name


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """A URL that matches nothing: under /api/ a JSON error like every other API answer, else
    the page."""
    if request.path.startswith("/api/"):
        body = NotFound(f"no API endpoint at {request.path}").as_dict()
        return JsonResponse(body, status=NotFound.status_code)
    return defaults.page_not_found(request, exception)


class PlatformError(QuorumError):
    """An outside crowd platform refused a request or kept failing; nothing more was done."""

    status_code = 502
    code = "platform_error"
