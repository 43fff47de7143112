"""Domain errors, and the one handler that maps them to HTTP responses."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import InterfaceError, OperationalError
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger("quorum.errors")


@dataclass(frozen=True)
class InputError:
    """One problem in user input: where it is (line, field) and why it is wrong."""

    reason: str
    field: str = ""
    line: int | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        where += [f"field {self.field}"] if self.field else []
        return f"{', '.join(where)}: {self.reason}" if where else self.reason

    def as_dict(self) -> dict[str, Any]:
        """The error as the API shows it."""
        return {"line": self.line, "field": self.field, "reason": self.reason}


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
        body: dict[str, Any] = {"detail": self.message, "code": self.code}
        if self.errors:
            body["errors"] = [error.as_dict() for error in self.errors]
            body["total_errors"] = self.total_errors
        return body

    def report(self) -> str:
        """The error as the command line prints it, one problem a line."""
        lines = [self.message] + [f"  {error}" for error in self.errors]
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
    """Map domain errors to their status and body, a lost database to 503; the rest to DRF."""
    if isinstance(exc, QuorumError):
        return Response(exc.as_dict(), status=exc.status_code)
    if database_unavailable(exc):
        logger.warning("database unavailable: %s", exc)
        return database_unavailable_response()
    return exception_handler(exc, context)


class PlatformError(QuorumError):
    """An outside crowd platform refused a request or kept failing; nothing more was done."""

    status_code = 502
    code = "platform_error"
