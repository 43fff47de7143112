"""Production settings and the security promises of SECURITY.md: `check --deploy` clean with the
documented production variables, TLS and HSTS, security headers and a Content-Security-Policy
the pages work under, limits on failed log-ins, and no secret in any log line."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from pytest_django import Settings
from rest_framework.test import APIClient

from core.logs import redact
from core.permissions import Role
from labelling.crowd.mturk import MTurkPlatform
from labelling.models import Invitation, Project
from labelling.services.invitations import invitation_create
from labelling.services.labellers import labeller_create
from tests.test_settings import KEY, failure, value

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = REPO / "templates"
PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def var_dir(tmp_path: Path) -> str:
    return str(tmp_path / "var")


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    """Failed log-ins are counted in the cache: each test starts and ends with none."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def web(settings: Settings) -> None:
    """Plain static files (no collectstatic manifest) and fast password hashing."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# Production settings


def production_variables(var_dir: str) -> dict[str, str]:
    """The variables .env.example documents, with a real secret key and a private var folder."""
    found = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, raw = line.partition("=")
            found[name.strip()] = raw.strip()
    found.update(SECRET_KEY=secrets.token_urlsafe(50), QUORUM_VAR_DIR=var_dir)
    return found


def check_deploy(variables: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cleared = {"DJANGO_SETTINGS_MODULE", "SECURE_SSL_REDIRECT", *variables}
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    env.update(variables)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_the_documented_production_variables(var_dir: str) -> None:
    done = check_deploy(production_variables(var_dir))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_check_deploy_warns_when_http_is_not_redirected(var_dir: str) -> None:
    done = check_deploy({**production_variables(var_dir), "SECURE_SSL_REDIRECT": "0"})

    assert done.returncode != 0
    assert "security.W008" in done.stdout + done.stderr


def test_with_debug_off_http_is_redirected_and_hsts_lasts_a_year(var_dir: str) -> None:
    shown = value(
        "settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS, "
        "settings.SESSION_COOKIE_SECURE, settings.CSRF_COOKIE_SECURE",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
        SECURE_SSL_REDIRECT="",  # unset (the test run itself turns it off)
    )

    assert shown == (True, 31_536_000, True, True)


def test_with_debug_on_nothing_insists_on_https(var_dir: str) -> None:
    shown = value(
        "settings.SECURE_SSL_REDIRECT, settings.SECURE_HSTS_SECONDS, "
        "settings.SESSION_COOKIE_SECURE",
        QUORUM_VAR_DIR=var_dir,
        DEBUG="1",
    )

    assert shown == (False, 0, False)


def test_tls_settings_come_from_the_environment(var_dir: str) -> None:
    shown = value(
        "settings.SECURE_PROXY_SSL_HEADER, settings.SECURE_HSTS_SECONDS, "
        "settings.SECURE_HSTS_INCLUDE_SUBDOMAINS, settings.SECURE_HSTS_PRELOAD",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
        SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto",
        SECURE_HSTS_SECONDS="600",
        SECURE_HSTS_INCLUDE_SUBDOMAINS="yes",
        SECURE_HSTS_PRELOAD="1",
    )

    assert shown == (("HTTP_X_FORWARDED_PROTO", "https"), 600, True, True)


def test_a_proxy_header_that_is_not_a_header_name_fails_naming_the_variable(var_dir: str) -> None:
    message = failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, SECURE_PROXY_SSL_HEADER="X Proto")

    assert "SECURE_PROXY_SSL_HEADER" in message
    assert "'X Proto'" in message


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"QUORUM_LOGIN_FAILURE_LIMIT": "0"}, "QUORUM_LOGIN_FAILURE_LIMIT"),
        ({"QUORUM_LOGIN_FAILURE_WINDOW": "-5"}, "QUORUM_LOGIN_FAILURE_WINDOW"),
        ({"QUORUM_CLIENT_IP_HEADER": "X_Real IP"}, "QUORUM_CLIENT_IP_HEADER"),
        ({"SECURE_HSTS_SECONDS": "-1"}, "SECURE_HSTS_SECONDS"),
    ],
)
def test_a_bad_security_setting_fails_naming_its_variable(
    var_dir: str, variables: dict[str, str], named: str
) -> None:
    assert named in failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, **variables)


def test_the_label_rate_comes_from_the_environment(var_dir: str) -> None:
    shown = value(
        "settings.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES']['labels'], "
        "settings.LOGIN_FAILURE_LIMIT, settings.LOGIN_FAILURE_WINDOW",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
        QUORUM_LABEL_RATE="30/minute",
        QUORUM_LOGIN_FAILURE_LIMIT="3",
        QUORUM_LOGIN_FAILURE_WINDOW="60",
    )

    assert shown == ("30/minute", 3, 60)


# TLS and headers on responses


def test_plain_http_is_redirected_to_https_and_https_gets_hsts(
    settings: Settings, db: None
) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

    plain = Client().get("/accounts/login/")
    proxied = Client().get("/accounts/login/", HTTP_X_FORWARDED_PROTO="https")

    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/accounts/login/"
    assert proxied.status_code == 200
    assert proxied["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "Strict-Transport-Security" not in Client().get("/api/schema/")


@pytest.mark.parametrize("path", ["/accounts/login/", "/api/v1/projects/none/tasks/next"])
def test_pages_and_api_answers_carry_the_security_headers(path: str, db: None) -> None:
    response = Client().get(path)

    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = dict(
        part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";")
    )
    assert policy["default-src"] == "'self'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["object-src"] == "'none'"


def test_the_api_docs_load_swagger_from_its_cdn_with_no_inline_script(db: None) -> None:
    page = Client().get("/api/docs/")
    script = Client().get("/api/docs/", {"script": ""})

    policy = page["Content-Security-Policy"]
    assert "script-src 'self' https://cdn.jsdelivr.net;" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    body = page.content.decode()
    assert re.search(r"<script>", body) is None, "no inline script on the docs page"
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


INLINE = [
    (re.compile(r"<script(?![^>]*\bsrc=)[^>]*>"), "an inline <script>"),
    (re.compile(r"<style\b"), "a <style> block"),
    (re.compile(r"\sstyle=\""), "a style attribute"),
    (re.compile(r"\son[a-z]+=\""), "an inline event handler"),
    (re.compile(r"javascript:"), "a javascript: URL"),
]


def test_no_template_holds_inline_script_or_style_that_the_policy_would_block() -> None:
    found = [
        f"{path.relative_to(REPO)}: {what}"
        for path in TEMPLATES.rglob("*.html")
        for pattern, what in INLINE
        if pattern.search(path.read_text())
    ]

    assert not found


# Limits on failed log-ins


@pytest.fixture
def user(project: Project) -> Any:
    labeller, _ = labeller_create(project=project, username="erin", role=Role.ENGINEER)
    labeller.user.set_password(PASSWORD)
    labeller.user.save(update_fields=["password"])
    return labeller.user


def log_in(password: str, *, ip: str = "10.0.0.1", username: str = "erin", **extra: str) -> Any:
    return Client().post(
        "/accounts/login/",
        {"username": username, "password": password},
        REMOTE_ADDR=ip,
        **extra,
    )


def test_past_the_limit_failed_logins_answer_429_even_with_the_right_password(
    user: Any, settings: Settings
) -> None:
    settings.LOGIN_FAILURE_LIMIT = 3
    failures = [log_in("wrong").status_code for _ in range(3)]

    refused = log_in(PASSWORD)

    assert failures == [200, 200, 200]
    assert refused.status_code == 429
    assert refused["Retry-After"] == str(settings.LOGIN_FAILURE_WINDOW)
    assert "Too many failed log-ins" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session


def test_the_limit_counts_per_username_and_address(
    user: Any, project: Project, settings: Settings
) -> None:
    settings.LOGIN_FAILURE_LIMIT = 2
    for _ in range(2):
        log_in("wrong", ip="10.0.0.1")
    labeller_create(project=project, username="olga", role=Role.CROWD)
    olga = get_user_model().objects.get(username="olga")
    olga.set_password(PASSWORD)
    olga.save(update_fields=["password"])

    assert log_in(PASSWORD, ip="10.0.0.2").status_code == 302, "another address logs in"
    assert log_in("wrong", ip="10.0.0.1", username="olga").status_code == 200
    assert log_in(PASSWORD, ip="10.0.0.1").status_code == 429


def test_a_right_password_before_the_limit_clears_the_count(user: Any, settings: Settings) -> None:
    settings.LOGIN_FAILURE_LIMIT = 2
    log_in("wrong")
    assert log_in(PASSWORD).status_code == 302
    log_in("wrong")

    assert log_in(PASSWORD).status_code == 302


def test_behind_a_proxy_the_client_address_header_is_counted(user: Any, settings: Settings) -> None:
    settings.LOGIN_FAILURE_LIMIT = 1
    settings.CLIENT_IP_HEADER = "X-Real-IP"
    log_in("wrong", ip="10.9.9.9", HTTP_X_REAL_IP="203.0.113.7")

    assert log_in(PASSWORD, ip="10.9.9.9", HTTP_X_REAL_IP="203.0.113.8").status_code == 302
    assert log_in(PASSWORD, ip="10.9.9.9", HTTP_X_REAL_IP="203.0.113.7").status_code == 429


def test_the_admin_login_form_is_limited_too(user: Any, settings: Settings) -> None:
    settings.LOGIN_FAILURE_LIMIT = 1
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    form = {"username": "erin", "password": "wrong", "next": "/admin/"}
    Client().post("/admin/login/", form, REMOTE_ADDR="10.0.0.1")

    refused = Client().post("/admin/login/", {**form, "password": PASSWORD}, REMOTE_ADDR="10.0.0.1")

    assert refused.status_code == 200
    assert "Too many failed log-ins" in refused.content.decode()
    assert "_auth_user_id" not in refused.wsgi_request.session


# No secret in the logs


def test_redaction_covers_headers_tokens_passwords_and_link_tokens() -> None:
    token = "0123456789abcdef0123456789abcdef01234567"
    text = "\n".join(
        [
            f"headers={{'Authorization': b'Token {token}', 'Host': 'x'}}",
            "Authorization: Bearer abc.def.ghi",
            "POST password=hunter22&next=/",
            '{"secret_access_key": "wJalrXUtnFEMI"} Not Found: /join/Zm9vYmFyYmF6/',
            "GET /ext/link/pet-match/a1b2c3d4e5/?PROLIFIC_PID=1",
        ]
    )

    shown = redact(text)

    for secret in (token, "abc.def.ghi", "hunter22", "wJalrXUtnFEMI", "Zm9vYmFyYmF6", "a1b2c3d4e5"):
        assert secret not in shown
    assert "/join/[redacted]/" in shown and "next=/" in shown and "'Host': 'x'" in shown


class FakeAmazon(BaseHTTPRequestHandler):
    """Mechanical Turk's requester API on loopback: the real boto3 client talks to it."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"AvailableBalance": "123.45"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-amz-json-1.1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        """The server's own access log is not Quorum's."""


@pytest.fixture
def amazon(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A loopback requester endpoint and AWS credentials; yields the secret access key."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeAmazon)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.MTURK_ENDPOINT = f"http://127.0.0.1:{server.server_address[1]}"
    secret = secrets.token_urlsafe(30)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAQUORUMLOGTEST01")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    yield secret
    server.shutdown()
    server.server_close()


@pytest.fixture
def all_logs() -> Iterator[io.StringIO]:
    """Everything every logger writes, at DEBUG, through Quorum's configured console handler
    (and its filter). SQL is not among it: Django logs queries only with DEBUG on, which
    production refuses (see SECURITY.md)."""
    handler = next(h for h in logging.getLogger("quorum").handlers if h.get_name() == "console")
    assert isinstance(handler, logging.StreamHandler)
    captured = io.StringIO()
    before_stream = handler.setStream(captured)
    loggers = [logging.getLogger(), *map(logging.getLogger, logging.root.manager.loggerDict)]
    levels = {lg.name: lg.level for lg in loggers}
    for lg in loggers:
        lg.setLevel(logging.DEBUG)
    root_handlers = list(logging.getLogger().handlers)
    if handler not in root_handlers:
        logging.getLogger().addHandler(handler)
    try:
        yield captured
    finally:
        logging.getLogger().handlers = root_handlers
        for lg in loggers:
            lg.setLevel(levels[lg.name])
        handler.setStream(before_stream)  # type: ignore[arg-type]


def test_no_token_password_or_secret_reaches_the_logs(
    project: Project,
    settings: Settings,
    amazon: str,
    all_logs: io.StringIO,
    client_for: Callable[..., APIClient],
) -> None:
    labeller, token = labeller_create(project=project, username="erin", role=Role.ENGINEER)
    labeller.user.set_password(PASSWORD)
    labeller.user.save(update_fields=["password"])
    wrong = "not-the-" + PASSWORD
    log_in(wrong)
    log_in(PASSWORD)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    api.get("/api/v1/projects/pet-match/releases")
    api.post("/api/v1/projects/pet-match/invitations", {"role": "crowd"}, format="json")
    APIClient().get("/api/v1/projects/pet-match/releases", HTTP_AUTHORIZATION=f"Token {token}x")
    invitation = invitation_create(project=project, user=None)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(1))
    Client().get(f"/join/{invitation.token}/")
    balance = MTurkPlatform().balance()

    logged = all_logs.getvalue()
    assert balance is not None and str(balance) == "123.45"
    assert "failed login from 10.0.0.1" in logged
    assert "Authorization" in logged and "[redacted]" in logged, "botocore logged its request"
    assert "Unauthorized: /api/v1/projects/pet-match/releases" in logged
    assert "/join/[redacted]/" in logged
    for secret, name in (
        (token, "the API token"),
        (PASSWORD, "the password"),
        (wrong, "the wrong password"),
        (settings.SECRET_KEY, "SECRET_KEY"),
        (amazon, "the AWS secret key"),
        (invitation.token, "the sign-up token"),
    ):
        assert secret not in logged, f"{name} is in the logs"


# Health check


def test_the_health_check_answers_without_login_and_names_each_service(
    settings: Settings, db: None
) -> None:
    settings.SECURE_SSL_REDIRECT = True

    response = Client().get("/healthz")

    assert response.status_code == 200, "exempt from the HTTPS redirect: the balancer calls it"
    expected_redis = "ok" if settings.REDIS_URL else "not configured"
    assert response.json() == {"status": "ok", "database": "ok", "redis": expected_redis}


def test_the_health_check_answers_503_naming_an_unreachable_redis(
    settings: Settings, db: None
) -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"

    response = Client().get("/healthz")

    assert response.status_code == 503
    assert response.json() == {"status": "failing", "database": "ok", "redis": "unreachable"}
