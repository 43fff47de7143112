"""Settings from the environment: safe defaults, or a loud failure naming the variable.

Each case imports core.settings in a fresh interpreter with a clean environment, so that the
test run's own settings (already loaded) are neither used nor changed.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CLEARED = ("SECRET_KEY", "DEBUG", "DATABASE_URL", "REDIS_URL", "EXPORT_STORAGE", "ALLOWED_HOSTS")
KEY = "a-secret-key-for-the-settings-tests"


def configure(expression: str, **variables: str) -> subprocess.CompletedProcess[str]:
    """Set up Django under `variables` alone and print `expression` (`settings` in scope)."""
    env = {name: value for name, value in os.environ.items() if name not in CLEARED}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.update(variables)
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'core.settings'; "
        f"django.setup(); from django.conf import settings; print(repr(({expression})))"
    )
    return subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=60
    )


def value(expression: str, **variables: str) -> Any:
    """The value of `expression` (a Python literal); fails with the child's stderr on an error."""
    done = configure(expression, **variables)
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip())


def failure(**variables: str) -> str:
    """The last line of the child's traceback: the ImproperlyConfigured message."""
    done = configure("'configured'", **variables)
    assert done.returncode != 0, done.stdout
    assert "ImproperlyConfigured" in done.stderr
    return done.stderr.strip().splitlines()[-1]


@pytest.fixture
def var_dir(tmp_path: Path) -> str:
    """A QUORUM_VAR_DIR of its own, so that nothing is written under the repository."""
    return str(tmp_path / "var")


def test_without_debug_a_missing_secret_key_fails_naming_secret_key(var_dir: str) -> None:
    assert "SECRET_KEY" in failure(QUORUM_VAR_DIR=var_dir)


def test_an_empty_secret_key_counts_as_missing(var_dir: str) -> None:
    assert "SECRET_KEY" in failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY="  ")


def test_with_debug_on_a_missing_secret_key_is_replaced_by_a_throwaway_one(var_dir: str) -> None:
    shown = value("settings.DEBUG, bool(settings.SECRET_KEY)", QUORUM_VAR_DIR=var_dir, DEBUG="1")

    assert shown == (True, True)


@pytest.mark.parametrize(("raw", "expected"), [("true", True), ("off", False), ("0", False)])
def test_debug_reads_the_usual_spellings_of_a_boolean(
    var_dir: str, raw: str, expected: bool
) -> None:
    shown = value("settings.DEBUG", QUORUM_VAR_DIR=var_dir, DEBUG=raw, SECRET_KEY=KEY)

    assert shown == expected


def test_a_debug_value_that_is_not_a_boolean_fails_naming_debug(var_dir: str) -> None:
    message = failure(QUORUM_VAR_DIR=var_dir, DEBUG="maybe", SECRET_KEY=KEY)

    assert "DEBUG" in message
    assert "maybe" in message


def test_the_default_database_is_sqlite_in_the_var_folder(var_dir: str) -> None:
    shown = value(
        "settings.DATABASES['default']['ENGINE'], str(settings.DATABASES['default']['NAME'])",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
    )

    expected = Path(var_dir).resolve() / "quorum.sqlite3"
    assert shown == ("django.db.backends.sqlite3", str(expected))
    assert expected.parent.is_dir()


def test_a_postgres_database_url_gives_the_postgresql_engine(var_dir: str) -> None:
    shown = value(
        "settings.DATABASES['default']['ENGINE'], settings.DATABASES['default']['NAME'], "
        "settings.DATABASES['default']['HOST'], settings.DATABASES['default']['PORT']",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
        DATABASE_URL="postgres://u@h:5432/db",
    )

    assert shown == ("django.db.backends.postgresql", "db", "h", 5432)


def test_a_mysql_database_url_fails_naming_the_scheme(var_dir: str) -> None:
    message = failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, DATABASE_URL="mysql://u:p@h:3306/db")

    assert "DATABASE_URL" in message
    assert "'mysql'" in message


def test_without_redis_url_jobs_run_in_process(var_dir: str) -> None:
    shown = value(
        "settings.CELERY_TASK_ALWAYS_EAGER, settings.CELERY_BROKER_URL, "
        "settings.CACHES['default']['BACKEND']",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
    )

    assert shown == (True, "memory://", "django.core.cache.backends.locmem.LocMemCache")


def test_with_redis_url_jobs_go_to_the_broker_at_that_url(var_dir: str) -> None:
    url = "redis://cache.internal:6379/3"
    shown = value(
        "settings.CELERY_TASK_ALWAYS_EAGER, settings.CELERY_BROKER_URL, "
        "settings.CACHES['default']['LOCATION']",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
        REDIS_URL=url,
    )

    assert shown == (False, url, url)


def test_a_redis_url_that_is_not_redis_fails_naming_redis_url(var_dir: str) -> None:
    message = failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, REDIS_URL="http://x")

    assert "REDIS_URL" in message
    assert "http://x" in message


def test_export_storage_defaults_to_the_exports_folder(var_dir: str) -> None:
    shown = value("settings.EXPORT_STORAGE", QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY)

    assert shown == f"file://{Path(var_dir).resolve() / 'exports'}"


def test_an_s3_export_storage_is_accepted(var_dir: str) -> None:
    shown = value(
        "settings.EXPORT_STORAGE",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
        EXPORT_STORAGE="s3://bucket/releases",
    )

    assert shown == "s3://bucket/releases"


def test_an_ftp_export_storage_fails_naming_export_storage(var_dir: str) -> None:
    message = failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, EXPORT_STORAGE="ftp://x")

    assert "EXPORT_STORAGE" in message
    assert "ftp://x" in message


def test_release_connections_default_to_two_and_must_be_at_least_one(var_dir: str) -> None:
    assert value("settings.RELEASE_CONNECTIONS", QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY) == 2
    shown = value(
        "settings.RELEASE_CONNECTIONS",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
        QUORUM_RELEASE_CONNECTIONS="4",
    )
    assert shown == 4
    message = failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, QUORUM_RELEASE_CONNECTIONS="0")
    assert "QUORUM_RELEASE_CONNECTIONS must be at least 1, got 0" in message
    message = failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, QUORUM_RELEASE_CONNECTIONS="two")
    assert "QUORUM_RELEASE_CONNECTIONS" in message


def test_without_debug_no_host_is_allowed_by_default(var_dir: str) -> None:
    assert value("settings.ALLOWED_HOSTS", QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY) == []


def test_allowed_hosts_is_a_comma_separated_list(var_dir: str) -> None:
    shown = value(
        "settings.ALLOWED_HOSTS",
        QUORUM_VAR_DIR=var_dir,
        SECRET_KEY=KEY,
        ALLOWED_HOSTS=" quorum.example.com, 10.0.0.5 ,",
    )

    assert shown == ["quorum.example.com", "10.0.0.5"]


def test_a_file_export_storage_without_an_absolute_path_fails(var_dir: str) -> None:
    message = failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, EXPORT_STORAGE="file://var/exports")

    assert "EXPORT_STORAGE" in message


def test_an_mturk_endpoint_that_is_neither_a_name_nor_a_url_fails(var_dir: str) -> None:
    message = failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, MTURK_ENDPOINT="prod")

    assert "MTURK_ENDPOINT" in message


def test_only_amazons_worker_sites_may_frame_and_receive_by_default(var_dir: str) -> None:
    hosts = value("settings.MTURK_WORKER_HOSTS", QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY)

    assert hosts == ["https://www.mturk.com", "https://workersandbox.mturk.com"]


def test_a_worker_host_that_is_not_an_origin_fails_naming_the_variable(var_dir: str) -> None:
    message = failure(
        QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, MTURK_WORKER_HOSTS="https://www.mturk.com/path"
    )

    assert "MTURK_WORKER_HOSTS" in message


def test_a_public_url_that_is_not_a_url_fails_naming_the_variable(var_dir: str) -> None:
    message = failure(QUORUM_VAR_DIR=var_dir, SECRET_KEY=KEY, QUORUM_PUBLIC_URL="quorum.example")

    assert "QUORUM_PUBLIC_URL" in message
