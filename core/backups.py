"""Backups of the database, and restoring them.

PostgreSQL: `pg_dump --format=custom` (one consistent snapshot, taken while Quorum runs) and
`pg_restore`. The embedded SQLite database: SQLite's online backup API, which copies a consistent
state even while the server writes (copying the file could catch it half-written, or without the
pages still in its write-ahead log). The connection's password goes to the tools through their
environment, never on a command line.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor

from core.exceptions import QuorumError

SQLITE_MAGIC = b"SQLite format 3\x00"
PG_MAGIC = b"PGDMP"
EXTENSIONS = {"postgresql": "dump", "sqlite": "sqlite3"}
TOOL_SECONDS = 6 * 3600


class BackupError(QuorumError):
    """A backup or a restore could not be made; the message says why."""

    code = "backup_failed"


def _vendor(alias: str) -> str:
    vendor = connections[alias].vendor
    if vendor not in EXTENSIONS:
        raise BackupError(f"backups support PostgreSQL and SQLite, not {vendor}")
    return vendor


def _pg_environment(alias: str) -> dict[str, str]:
    """libpq's variables for the connection: the tools read host, user and password from them."""
    conf: dict[str, Any] = connections[alias].settings_dict
    env = dict(os.environ)
    for variable, value in (
        ("PGHOST", conf.get("HOST")),
        ("PGPORT", conf.get("PORT")),
        ("PGUSER", conf.get("USER")),
        ("PGPASSWORD", conf.get("PASSWORD")),
        ("PGDATABASE", conf.get("NAME")),
        ("PGSSLMODE", (conf.get("OPTIONS") or {}).get("sslmode")),
    ):
        if value:
            env[variable] = str(value)
    return env


def _run(tool: str, arguments: list[str], alias: str) -> None:
    """Run a PostgreSQL client tool against the database; raise naming its complaint."""
    found = shutil.which(tool)
    if found is None:
        raise BackupError(
            f"{tool} is not installed: install the PostgreSQL client tools "
            "(apt-get install postgresql-client), of the server's major version or newer"
        )
    done = subprocess.run(
        [found, *arguments],
        env=_pg_environment(alias),
        capture_output=True,
        text=True,
        timeout=TOOL_SECONDS,
    )
    if done.returncode != 0:
        raise BackupError(f"{tool} failed: {done.stderr.strip()[-2000:]}")


def backup_name(vendor: str, now: datetime | None = None) -> str:
    """quorum-<UTC time>.dump (PostgreSQL) or .sqlite3 (SQLite)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return f"quorum-{stamp}.{EXTENSIONS[vendor]}"


def backup_create(*, folder: Path | None = None, alias: str = DEFAULT_DB_ALIAS) -> Path:
    """Write a consistent copy of the database into `folder` (BACKUP_DIR); return its path.

    The copy is written under a temporary name and renamed when complete, so that a file named
    like a backup is always a whole one.
    """
    vendor = _vendor(alias)
    folder = Path(folder or settings.BACKUP_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / backup_name(vendor)
    partial = path.with_name(path.name + ".partial")
    try:
        if vendor == "postgresql":
            _run("pg_dump", ["--format=custom", "--file", str(partial)], alias)
        else:
            _sqlite_copy(alias, partial)
        partial.rename(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _sqlite_copy(alias: str, target: Path) -> None:
    connection = connections[alias]
    connection.ensure_connection()
    copy = sqlite3.connect(target)
    try:
        connection.connection.backup(copy)
    finally:
        copy.close()


def backup_kind(path: Path) -> str:
    """Which database a backup file is for: postgresql or sqlite; raise if it is neither."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(len(SQLITE_MAGIC))
    except OSError as exc:
        raise BackupError(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(PG_MAGIC):
        return "postgresql"
    if head == SQLITE_MAGIC:
        return "sqlite"
    raise BackupError(
        f"{path} is not a Quorum backup: neither a pg_dump custom-format file nor a SQLite database"
    )


def _tables(alias: str) -> list[str]:
    with connections[alias].cursor() as cursor:
        return list(connections[alias].introspection.table_names(cursor))


def backup_restore(*, path: Path, replace: bool = False, alias: str = DEFAULT_DB_ALIAS) -> int:
    """Restore a backup into the database; return how many migrations of this code are still
    to apply (a backup of an older version). Refuses a database that holds tables unless
    `replace`."""
    vendor, kind = _vendor(alias), backup_kind(path)
    if kind != vendor:
        raise BackupError(f"{path} is a {kind} backup, but DATABASE_URL points at {vendor}")
    tables = _tables(alias)
    if tables and not replace:
        name = connections[alias].settings_dict["NAME"]
        raise BackupError(
            f"the database {name} already holds {len(tables)} tables: restore into an empty "
            "database, or pass --replace (make restore … REPLACE=1) to overwrite it"
        )
    if vendor == "postgresql":
        connections[alias].close()
        clean = ["--clean", "--if-exists"] if tables else []
        arguments = ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction"]
        _run("pg_restore", [*arguments, *clean, "--dbname", _dbname(alias), str(path)], alias)
    else:
        _sqlite_restore(alias, path)
    return _pending_migrations(alias)


def _dbname(alias: str) -> str:
    return str(connections[alias].settings_dict["NAME"])


def _sqlite_restore(alias: str, path: Path) -> None:
    connection = connections[alias]
    connection.ensure_connection()
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        source.backup(connection.connection)
    finally:
        source.close()


def _pending_migrations(alias: str) -> int:
    connection = connections[alias]
    connection.close()
    executor = MigrationExecutor(connection)
    return len(executor.migration_plan(executor.loader.graph.leaf_nodes()))
