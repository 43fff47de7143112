"""Logging in, with a limit on failed attempts per username and client address.

Failures are counted in the cache (Redis when REDIS_URL is set, so that every web node shares the
count) for LOGIN_FAILURE_WINDOW seconds. Past LOGIN_FAILURE_LIMIT, the log-in page answers 429 and
the admin's log-in form says why, whatever the password. Nothing about the attempt but the client
address is logged: people type passwords into the username field.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger("quorum.auth")
TOO_MANY = "too_many_attempts"


def client_ip(request: HttpRequest | None) -> str:
    """The client's address: from QUORUM_CLIENT_IP_HEADER behind a proxy, else the peer's."""
    if request is None:
        return ""
    if settings.CLIENT_IP_HEADER:
        header = "HTTP_" + settings.CLIENT_IP_HEADER.upper().replace("-", "_")
        forwarded = request.META.get(header, "")
        if forwarded:
            # X-Forwarded-For lists the hops: the client is the first.
            return str(forwarded).split(",")[0].strip()
    return str(request.META.get("REMOTE_ADDR", ""))


def _key(username: str, ip: str) -> str:
    digest = hashlib.sha256(f"{username.casefold()}\0{ip}".encode()).hexdigest()
    return f"quorum:login-failures:{digest}"


def login_failures(*, username: str, ip: str) -> int:
    """Failed log-ins of this username from this address in the current window."""
    try:
        return int(cache.get(_key(username, ip), 0))
    except Exception:
        # The cache (Redis) is down: logging in must still work; the limit is back with it.
        logger.warning("login limit not checked: the cache is unreachable", exc_info=True)
        return 0


def login_failure_record(*, username: str, ip: str) -> None:
    """Count one failed log-in; the window starts at the first failure."""
    key = _key(username, ip)
    try:
        cache.add(key, 0, timeout=settings.LOGIN_FAILURE_WINDOW)
        cache.incr(key)
    except Exception:
        logger.warning("failed login not counted: the cache is unreachable", exc_info=True)
    logger.warning("failed login from %s", ip or "an unknown address")


def login_failures_clear(*, username: str, ip: str) -> None:
    """Forget the failures of a username and address once its password was right."""
    try:
        cache.delete(_key(username, ip))
    except Exception:
        logger.warning("login failures not cleared: the cache is unreachable", exc_info=True)


def too_many_message() -> str:
    minutes = max(1, round(settings.LOGIN_FAILURE_WINDOW / 60))
    return (
        f"Too many failed log-ins for this username from your address: try again in "
        f"{minutes} minute{'s' if minutes != 1 else ''}."
    )


class ThrottledLogin(forms.Form):
    """Refuses a log-in past the failure limit, and counts failures (mixed into Django's forms)."""

    request: HttpRequest | None
    throttled = False

    def clean(self) -> dict[str, Any]:
        username = str(self.cleaned_data.get("username") or "")
        ip = client_ip(self.request)
        if login_failures(username=username, ip=ip) >= settings.LOGIN_FAILURE_LIMIT:
            self.throttled = True
            logger.warning("login refused: too many failed attempts from %s", ip)
            raise forms.ValidationError(too_many_message(), code=TOO_MANY)
        try:
            cleaned = super().clean()
        except forms.ValidationError:
            login_failure_record(username=username, ip=ip)
            raise
        login_failures_clear(username=username, ip=ip)
        return cleaned or {}


class LoginForm(ThrottledLogin, AuthenticationForm):
    """The log-in page's form."""


class AdminLoginForm(ThrottledLogin, AdminAuthenticationForm):
    """The admin site's log-in form, under the same limit."""


class LoginView(auth_views.LoginView):
    """The log-in page: 429 with a Retry-After once the failure limit is reached."""

    authentication_form = LoginForm

    def form_invalid(self, form: Any) -> HttpResponse:
        response = super().form_invalid(form)
        if getattr(form, "throttled", False):
            response.status_code = 429
            response["Retry-After"] = str(settings.LOGIN_FAILURE_WINDOW)
        return response
