"""Release numbering under concurrency on SQLite: two processes, one database file, transactions
begun the default (deferred) way, as a `sqlite:///` DATABASE_URL gives them."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.05)


def test_two_releases_at_once_on_sqlite_never_publish_together_and_number_one_after_another(
    tmp_path: Path,
) -> None:
    db, exports, signals = tmp_path / "race.sqlite3", tmp_path / "exports", tmp_path / "signals"
    signals.mkdir()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db}?timeout=60",
        "EXPORT_STORAGE": exports.as_uri(),
        "DEBUG": "1",
        "SECRET_KEY": "release-race",
        "DJANGO_SETTINGS_MODULE": "core.settings",
    }
    env.pop("REDIS_URL", None)

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip

    for args in (("manage.py", "migrate", "-v0"), ("-m", "tests.labelling.release_race", "setup")):
        done = start(*args)
        assert done.wait(120) == 0, done.communicate()[1]
    race = ("-m", "tests.labelling.release_race", "release")
    first = start(*race, "first", str(signals))
    wait_for(signals / "first.publishing")
    # The first holds its version while it publishes; the second runs meanwhile.
    second = start(*race, "second", str(signals))
    # Time enough for the second to start, build and publish, unless it waits for the first.
    deadline = time.monotonic() + 12
    while not (overlapped := (signals / "second.publishing").exists()):
        if time.monotonic() > deadline or second.poll() is not None:
            break
        time.sleep(0.05)
    (signals / "go").touch()
    outputs = [process.communicate(timeout=120) for process in (first, second)]

    assert [process.returncode for process in (first, second)] == [0, 0], outputs
    assert not overlapped, "two releases were publishing at once"
    assert outputs[0][0].strip() == "v1"
    assert outputs[1][0].strip() in ("v2", "conflict: another release of this project was "
                                     "published meanwhile: run it again")  # fmt: skip
    with sqlite3.connect(db) as read:
        rows = read.execute(
            "SELECT version, location, data_file, sha256 FROM labelling_release ORDER BY version"
        ).fetchall()
    assert [row[0] for row in rows] == list(range(1, len(rows) + 1))
    for _, location, data_file, sha256 in rows:
        data = (Path(location.removeprefix("file://")) / data_file).read_bytes()
        assert hashlib.sha256(data).hexdigest() == sha256 and data.count(b"\n") == 3
