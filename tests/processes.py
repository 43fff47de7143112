"""Real service processes for the tests: a private Redis server, Celery workers, a web server.

Each is started by the test that needs it, on a free loopback port, and stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis
from django.db import connection

from core.celery import app as celery_app

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
REQUIRE_SERVICES = os.environ.get("QUORUM_REQUIRE_SERVICES") == "1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def database_url_of_this_run(application_name: str = "") -> str:
    """A DATABASE_URL for the database this test run uses (test_…, not the configured one);
    `application_name` names the connections made through it, for pg_stat_activity."""
    db = connection.settings_dict
    user = quote(db["USER"] or "", safe="")
    password = f":{quote(str(db['PASSWORD']), safe='')}" if db["PASSWORD"] else ""
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db["PORT"] else ""
    query = f"?application_name={quote(application_name)}" if application_name else ""
    return f"postgres://{user}{password}@{host}{port}/{db['NAME']}{query}"


def wait_until(check: Any, *, timeout: float, what: str, log: Path | None = None) -> Any:
    """Poll `check()` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    detail = f"; log:\n{log.read_text(errors='replace')[-6000:]}" if log and log.exists() else ""
    pytest.fail(f"{what} did not happen within {timeout:.0f} s{detail}")


def stop(process: subprocess.Popen[bytes], *, kill: bool = False) -> None:
    """Stop a process this test started, with its children (it leads its own process group):
    SIGTERM and up to 10 s to finish, or SIGKILL at once when `kill`."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    # Children left behind (an embedded beat) share the group: end them too.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


class RedisServer:
    """A redis-server of the test's own on a free port, never the shared one."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again, on the same port) and wait until it answers."""
        binary = shutil.which("redis-server")
        if binary is None:
            message = "needs redis-server on PATH (apt-get install redis-server)"
            if REQUIRE_SERVICES:
                pytest.fail(message)
            pytest.skip(message)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        command += ["--appendonly", "no", "--dir", str(self.folder)]
        with open(self.folder / "redis.log", "ab") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        log = self.folder / "redis.log"
        wait_until(self.answers, timeout=10, what="redis-server start", log=log)

    def answers(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        """Shut the server down (its data is gone: nothing is saved)."""
        if self.process is not None:
            stop(self.process)
            self.process = None


@contextmanager
def app_on_redis(url: str, settings: Any) -> Iterator[None]:
    """Point this process's cache and Celery broker at `url` for the block."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
    before = celery_app.conf.broker_url
    celery_app.conf.broker_url = url
    _drop_broker_pools()
    try:
        yield
    finally:
        celery_app.conf.broker_url = before
        _drop_broker_pools()


def _drop_broker_pools() -> None:
    # The connection and producer pools were made for the old broker URL; Celery rebuilds them on
    # the next send (as it does in a forked child).
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


def start_worker(
    *,
    redis_url: str,
    log: Path,
    name: str,
    queue: str = "celery",
    beat: bool = False,
    supervised: bool = False,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A Celery worker subprocess (solo pool) on the test database and `redis_url`; with `beat`,
    the periodic scheduler runs inside it; `supervised`, through scripts/worker.sh (as
    `make worker` runs it), which starts it again when it exits. Its database connections are
    named `name`."""
    from django.conf import settings

    environment = {
        **os.environ,
        "DATABASE_URL": database_url_of_this_run(name),
        "REDIS_URL": redis_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "QUORUM_VAR_DIR": str(settings.VAR_DIR),
        "CELERY": str(BIN / "celery"),
        **(env or {}),
    }
    if supervised:
        command = ["bash", str(REPO / "scripts" / "worker.sh")]
    else:
        command = [str(BIN / "celery"), "-A", "core", "worker"]
    command += ["--pool=solo", "-l", "info", "-Q", queue, "-n", f"{name}@%h"]
    command += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    if beat:
        command += ["--beat", "--schedule", str(log.with_suffix(".beat"))]
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip


def start_web(
    *, redis_url: str, log: Path, name: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """Gunicorn with one synchronous worker, as in production, on the test database; its
    database connections are named `name`. Returns the process and its base URL once it
    listens."""
    from django.conf import settings

    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url_of_this_run(name),
        "REDIS_URL": redis_url,
        "SECRET_KEY": settings.SECRET_KEY,
        "QUORUM_VAR_DIR": str(settings.VAR_DIR),
        "ALLOWED_HOSTS": "127.0.0.1",
        "DEBUG": "0",
        "SECURE_COOKIES": "0",
        # Plain HTTP on loopback: no redirect to HTTPS (on by default with DEBUG off).
        "SECURE_SSL_REDIRECT": "0",
        **(env or {}),
    }
    command = [str(BIN / "gunicorn"), "core.wsgi:application", "--workers", "1"]
    command += ["--bind", f"127.0.0.1:{port}", "--timeout", "60"]
    with open(log, "ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    wait_until(lambda: _listens(port), timeout=60, what="gunicorn start", log=log)
    return process, f"http://127.0.0.1:{port}"


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False
