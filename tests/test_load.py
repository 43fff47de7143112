"""A short load run in CI: the crowd and an engineer at once against gunicorn and a Celery worker
(`benchmarks/load.py`, whose full five-minute run is part of `make bench`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings

from tests.processes import database_url_of_this_run

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.needs_postgres, pytest.mark.needs_redis, pytest.mark.django_db]


def test_a_short_load_run_loses_nothing_errs_nowhere_and_keeps_memory_flat() -> None:
    # A Redis database of the run's own: its Celery worker must not take other tests' jobs.
    redis_url = urlunsplit(urlsplit(settings.REDIS_URL)._replace(path="/15"))
    command = [
        sys.executable, "benchmarks/load.py", "--seconds", "30", "--crowd", "8",
        "--items", "2000", "--engineer-every", "10", "--redis-url", redis_url,
    ]  # fmt: skip
    env = {**os.environ, "DATABASE_URL": database_url_of_this_run()}
    result = subprocess.run(
        command, cwd=REPO, env=env, capture_output=True, text=True, timeout=420, check=False
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "FAIL" not in result.stdout
    assert result.stdout.count("PASS ") == 7, result.stdout
