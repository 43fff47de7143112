"""Backups: a backup restored into a fresh database gives back the same data, down to the bytes of
a release regenerated from it (the same sha256), on the database the suite runs on (SQLite
always; PostgreSQL with DATABASE_URL, restoring into a scratch database of its own)."""

from __future__ import annotations

import io
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from core.backups import backup_create, backup_name
from labelling.models import Project
from labelling.services.releases import release_create
from tests.labelling.release_world import World

REPO = Path(__file__).resolve().parents[1]


def manage(*arguments: str, database_url: str, var_dir: Path) -> subprocess.CompletedProcess[str]:
    """A management command in its own process, on another database (same SECRET_KEY)."""
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update(DATABASE_URL=database_url, QUORUM_VAR_DIR=str(var_dir))
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def fresh_database(tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database of the kind the suite runs on, dropped afterwards."""
    if connection.vendor != "postgresql":
        yield f"sqlite:///{tmp_path / 'restored.sqlite3'}"
        return
    conf = connection.settings_dict
    name = f"quorum_ops_restore_{secrets.token_hex(4)}"
    server = psycopg.connect(
        host=conf["HOST"] or None,
        port=conf["PORT"] or None,
        user=conf["USER"] or None,
        password=conf["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )
    server.execute(f"CREATE DATABASE {name}")
    user = f"{conf['USER']}{':' + conf['PASSWORD'] if conf['PASSWORD'] else ''}@"
    try:
        yield f"postgres://{user if conf['USER'] else ''}{conf['HOST']}:{conf['PORT']}/{name}"
    finally:
        server.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        server.close()


def released(world: World) -> None:
    for n in range(4):
        world.item(f"a{n}", label="match" if n % 2 else "no_match", split="train")
    world.item("e1", state="resolved", labellers=("w1", "w2"))
    world.item("q1", state="collecting", labellers=("w1",))


@pytest.mark.django_db(transaction=True)
def test_a_restored_backup_regenerates_a_release_with_the_same_sha256(
    project: Project, tmp_path: Path, fresh_database: str
) -> None:
    world = World(project)
    released(world)
    first = release_create(project=project, storage_url=(tmp_path / "exports").as_uri())
    shown = io.StringIO()
    call_command("backup", "--out", str(tmp_path / "backups"), stdout=shown)
    path = Path(re.search(r"backup written: (\S+)", shown.getvalue()).group(1))  # type: ignore[union-attr]

    restored = manage("restore", str(path), database_url=fresh_database, var_dir=tmp_path)
    again = manage(
        "export_release",
        "pet-match",
        "--out",
        str(tmp_path / "again"),
        database_url=fresh_database,
        var_dir=tmp_path,
    )

    assert restored.returncode == 0, restored.stderr
    assert "not applied" not in restored.stdout
    assert again.returncode == 0, again.stderr
    assert f"release v2: 5 rows, sha256 {first.sha256}" in again.stdout
    assert path.parent == tmp_path / "backups" and path.name.startswith("quorum-")


@pytest.mark.django_db(transaction=True)
def test_a_backup_is_named_by_its_time_and_left_whole(project: Project, tmp_path: Path) -> None:
    path = backup_create(folder=tmp_path)

    expected = "dump" if connection.vendor == "postgresql" else "sqlite3"
    assert re.fullmatch(rf"quorum-\d{{8}}T\d{{6}}Z\.{expected}", path.name)
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no partial file is left"
    assert backup_name("sqlite").endswith(".sqlite3")


@pytest.mark.django_db(transaction=True)
def test_restore_refuses_a_database_that_holds_data_unless_told_to_replace(
    project: Project, tmp_path: Path
) -> None:
    path = backup_create(folder=tmp_path)

    with pytest.raises(CommandError, match=r"already holds \d+ tables.*--replace"):
        call_command("restore", str(path))


def test_restore_refuses_a_file_that_is_not_a_backup(tmp_path: Path, db: None) -> None:
    bogus = tmp_path / "notes.dump"
    bogus.write_text("not a backup")

    with pytest.raises(CommandError, match="not a Quorum backup"):
        call_command("restore", str(bogus))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("restore", str(tmp_path / "missing.dump"))


def test_restore_refuses_a_backup_of_the_other_kind_of_database(tmp_path: Path, db: None) -> None:
    other = tmp_path / "other"
    other.write_bytes(b"SQLite format 3\x00" if connection.vendor == "postgresql" else b"PGDMP")

    with pytest.raises(CommandError, match="backup, but DATABASE_URL points at"):
        call_command("restore", str(other))
