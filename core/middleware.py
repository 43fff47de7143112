"""Middleware: pages answer 503 with Retry-After while the database is out of reach."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from core.exceptions import DATABASE_UNAVAILABLE, RETRY_AFTER_SECONDS, database_unavailable

logger = logging.getLogger("quorum.errors")
PAGE = (
    "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Try again shortly</title>"
    "</head><body><h1>Try again shortly</h1><p>The database is unavailable for a moment. "
    "Nothing was changed: reload this page in a few seconds.</p></body></html>"
)


class DatabaseUnavailableMiddleware:
    """Turn a lost database connection in a view into a 503 with Retry-After, not a 500.

    Django closes the broken connection when the request ends (it saw the error), so the next
    request connects again: no restart is needed. API views answer through the API's exception
    handler; this covers pages and anything else outside DRF.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not database_unavailable(exception):
            return None
        logger.warning("database unavailable on %s: %s", request.path, exception)
        if request.path.startswith("/api/"):
            body, content_type = json.dumps(DATABASE_UNAVAILABLE), "application/json"
        else:
            body, content_type = PAGE, "text/html; charset=utf-8"
        response = HttpResponse(body, status=503, content_type=content_type)
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
