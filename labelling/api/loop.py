"""The labelling loop's two busiest endpoints, answered outside DRF's request cycle.

`tasks/next` and `leases/{id}/label` run once each for every answer a crowd gives, so their cost
is the crowd's throughput. A request carrying an API token of a project member is answered here:
one read finds the token, its user and their membership, then the same services the DRF views
call do the work. Everything else (a session from the labelling page, a missing or unknown token,
a body that does not validate, a throttled answer) goes to the DRF view, which gives the same
answers and every error message; those views also stay the ones the OpenAPI schema documents.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import orjson
from django.contrib.auth import get_user_model
from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from core.exceptions import QuorumError
from core.permissions import LABELLERS
from core.throttling import FailOpenScopedRateThrottle
from labelling.api import views
from labelling.api.serializers import label_body, next_body, task_body
from labelling.models import Lease
from labelling.selectors import user_id_by_token
from labelling.services.leasing import (
    Submitted,
    label_submit,
    label_submit_at_once,
    lease_next_as_read,
    lease_next_by_token,
)

View = Callable[..., HttpResponse]
MAX_DURATION_MS = 24 * 3600 * 1000


class _Fallback(Exception):
    """This request is for the DRF view: it has what the fast lane does not handle."""


def _json(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(orjson.dumps(body), status=status, content_type="application/json")


def _token(request: HttpRequest) -> str:
    """The key of an `Authorization: Token <key>` header."""
    keyword, _, key = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if keyword != "Token" or not key or " " in key.strip():
        raise _Fallback
    return key.strip()


def _fast_lane(drf_view: View) -> Callable[[Callable[..., HttpResponse]], View]:
    """Answer with `handler` when it can; otherwise (it raises _Fallback) with the DRF view."""

    def decorate(handler: Callable[..., HttpResponse]) -> View:
        @functools.wraps(drf_view)
        def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            try:
                return handler(request, **kwargs)
            except _Fallback:
                return drf_view(request, **kwargs)
            except QuorumError as error:
                return _json(error.as_dict(), status=error.status_code)

        return csrf_exempt(view)  # token requests only: sessions go to DRF, which checks CSRF

    return decorate


@_fast_lane(views.NextTaskView.as_view())
def next_task(request: HttpRequest, slug: str) -> HttpResponse:
    """GET tasks/next for a token holder who is a member of the project."""
    if request.method != "GET":
        raise _Fallback
    found = lease_next_by_token(key=_token(request), project=slug, roles=LABELLERS)
    if found is None:
        raise _Fallback
    _, lease = found
    if lease is None:
        return HttpResponse(status=204)
    return _json(task_body(lease))


def _answer(request: HttpRequest) -> tuple[str, int | None, bool]:
    """The label, duration and whether the next item is wanted, of a well-formed answer body."""
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        raise _Fallback from None
    if not isinstance(body, dict) or not set(body) <= {"label", "duration_ms", "next"}:
        raise _Fallback
    label, duration = body.get("label"), body.get("duration_ms")
    wants_next = body.get("next", False)
    label = label.strip() if isinstance(label, str) else ""
    if not label or len(label) > 100:
        raise _Fallback
    if duration is not None and (type(duration) is not int or not 0 <= duration <= MAX_DURATION_MS):
        raise _Fallback
    if type(wants_next) is not bool:
        raise _Fallback
    return label, duration, wants_next


class _Throttled:
    """What DRF's scoped throttle reads of a request and a view."""

    throttle_scope = "labels"

    def __init__(self, user_id: int) -> None:
        self.user = get_user_model()(pk=user_id)


# Token → user id of the tokens this process has seen, for the throttle's key only: whether the
# token still holds is checked by the statement that stores the answer, or read again.
_HOLDERS: dict[str, int] = {}
_MAX_HOLDERS = 10_000


def _holder(key: str) -> int | None:
    """The id of the user holding this token, from this process's memory when it has seen it."""
    user_id = _HOLDERS.get(key)
    if user_id is None:
        user_id = user_id_by_token(key=key)
        if user_id is not None:
            if len(_HOLDERS) >= _MAX_HOLDERS:
                _HOLDERS.clear()
            _HOLDERS[key] = user_id
    return user_id


@_fast_lane(views.LabelSubmitView.as_view())
def submit_label(request: HttpRequest, lease_id: int) -> HttpResponse:
    """POST leases/{id}/label with a token: the same checks, throttle and service as the API."""
    if request.method != "POST" or request.content_type != "application/json":
        raise _Fallback
    key = _token(request)
    label, duration, wants_next = _answer(request)
    user_id = _holder(key)
    if user_id is None:
        raise _Fallback
    shim = _Throttled(user_id)
    if not FailOpenScopedRateThrottle().allow_request(shim, shim):  # type: ignore[arg-type]
        raise _Fallback  # DRF answers 429 with its Retry-After
    submitted = None
    if connection.vendor == "postgresql":
        submitted = label_submit_at_once(
            lease_id=lease_id,
            token=key,
            value=label,
            duration_ms=duration,
            source="api",
            then_next=wants_next,
        )
    if submitted is None:
        # Not the common case (or SQLite): the token is read again, then the full service runs.
        holder = user_id_by_token(key=key)
        if holder is None:
            _HOLDERS.pop(key, None)
            raise _Fallback
        submitted = label_submit(
            lease_id=lease_id,
            user=get_user_model()(pk=holder),
            value=label,
            duration_ms=duration,
            source="api",
        )
    body = label_body(submitted.label)
    if wants_next:
        body |= next_body(lambda: _next_after(key, user_id, submitted))
    return _json(body, status=201)


def _next_after(key: str, user_id: int, submitted: Submitted) -> Lease | None:
    """The next lease of the token's holder in the project of the answer they just gave."""
    if submitted.before_next is not None:  # read by the statement that stored the answer
        return lease_next_as_read(*submitted.before_next, roles=LABELLERS)
    project_id = submitted.label.project_id
    found = lease_next_by_token(key=key, project=project_id, roles=LABELLERS)
    if found is None:  # a holder this lane does not serve (a superuser): as the DRF view does
        user = get_user_model().objects.get(pk=user_id)
        return views.lease_next_in(user=user, project_id=project_id)
    return found[1]
