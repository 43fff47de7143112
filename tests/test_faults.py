"""Faults on the real services: Redis stopped, a worker killed, the database connection dropped,
a labeller who vanishes with a lease. Each runs on PostgreSQL with a Redis server and Celery
workers of its own (never the shared Redis), started and stopped by the test."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.db.models import Sum
from django.test import Client
from rest_framework.test import APIClient

from core.celery import app as celery_app
from core.permissions import Role
from labelling.models import (
    Consensus,
    Item,
    Job,
    Label,
    Labeller,
    Lease,
    Project,
    QueueEntry,
    Release,
)
from labelling.releases.storage import STAGING, STALE_STAGING_SECONDS
from labelling.services.consensus import consensus_compute, consensus_schedule
from labelling.services.imports import predictions_import
from labelling.services.jobs import job_release_start
from labelling.services.labellers import labeller_create
from labelling.services.labels import labels_import
from labelling.services.releases import ADVISORY_NAMESPACE, ReleaseRequest, release_create
from tests.labelling.test_leasing import queued_project
from tests.processes import (
    RedisServer,
    app_on_redis,
    start_web,
    start_worker,
    stop,
    wait_until,
)

pytestmark = [
    pytest.mark.needs_postgres,
    pytest.mark.needs_redis,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def own_redis(tmp_path: Path, settings: Any) -> Iterator[RedisServer]:
    """A Redis server of this test's own, with this process's cache and broker pointed at it."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        with app_on_redis(server.url, settings):
            assert not celery_app.conf.task_always_eager, "jobs must go through the broker"
            yield server
    finally:
        server.stop()


@pytest.fixture
def workers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The worker processes a test starts; every one still running is killed at the end (the
    test is over: nothing they do matters, and a warm shutdown takes seconds)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process, kill=True)


def expected(external_id: str) -> str:
    """The answer every labeller gives: match for even item numbers, no_match for odd ones."""
    return "match" if int(external_id[1:]) % 2 == 0 else "no_match"


def label_next(client: APIClient, slug: str = "pet-match") -> tuple[int, int | None]:
    """Lease the next item and answer it; the statuses of both calls (None: nothing to answer)."""
    offered = client.get(f"/api/v1/projects/{slug}/tasks/next")
    if offered.status_code != 200:
        return offered.status_code, None
    task = offered.json()
    label = expected(task["item"]["external_id"])
    answer = {"label": label, "duration_ms": 2500}
    answered = client.post(f"/api/v1/leases/{task['lease']}/label", answer, format="json")
    return offered.status_code, answered.status_code


def labels_in_consensus(project: Project) -> int:
    found = Consensus.objects.filter(item__project=project).aggregate(n=Sum("n_labels"))["n"]
    return int(found or 0)


def consensus_of(project: Project) -> dict[str, tuple[str, float, int, str]]:
    """Each item's consensus (label, confidence, labels used) and state."""
    rows = Consensus.objects.filter(item__project=project).select_related("item")
    return {
        c.item.external_id: (c.label, round(c.confidence, 9), c.n_labels, c.item.state)
        for c in rows
    }


def test_labels_are_saved_while_redis_is_down_and_consensus_catches_up_when_it_is_back(
    project: Project,
    client_for: Callable[..., APIClient],
    own_redis: RedisServer,
    workers: list[subprocess.Popen[bytes]],
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.NEW_LABELLER_GOLD = 0
    settings.CONSENSUS_DEBOUNCE_SECONDS = 1
    # No audit draw: every item the crowd agrees on is approved, whatever its id.
    project.escalation_audit_fraction = 0
    queued_project(project, n=12, overlap=(3, 3))
    crowd = [client_for(project, f"worker{k}", Role.CROWD) for k in range(3)]
    log = tmp_path / "worker.log"
    # The periodic catch-up every 2 s instead of 5 minutes, so that the test sees it work.
    timing = {"QUORUM_CATCH_UP_SECONDS": "2", "QUORUM_CONSENSUS_DEBOUNCE_SECONDS": "1"}
    workers.append(
        start_worker(
            redis_url=own_redis.url,
            log=log,
            name="faults-redis",
            beat=True,
            supervised=True,
            env=timing,
        )
    )

    # Redis up: answers are saved and the worker recomputes the consensus after them.
    for client in crowd:
        for _ in range(2):
            assert label_next(client) == (200, 201)
    wait_until(lambda: labels_in_consensus(project) == 6, timeout=30, what="consensus", log=log)
    # A catch-up that ran just before that recomputation committed may have sent one more, due a
    # second later: let it run, so that no recomputation is left to run while Redis is down.
    time.sleep(2.5)

    own_redis.stop()
    statuses = []
    for client in crowd:
        while (answered := label_next(client))[1] is not None:
            statuses.append(answered)
        assert answered == (204, None)

    # Every answer was taken and stored; none could reach the worker.
    assert statuses == [(200, 201)] * 30
    assert Label.objects.filter(project=project, state="valid").count() == 36
    assert labels_in_consensus(project) == 6

    own_redis.start()
    wait_until(lambda: labels_in_consensus(project) == 36, timeout=40, what="the catch-up", log=log)
    caught_up = consensus_of(project)
    assert {e: c[0] for e, c in caught_up.items()} == {e: expected(e) for e in caught_up}
    assert len(caught_up) == 12
    assert {c[3] for c in caught_up.values()} == {"approved"}
    # The same as a clean recomputation on the same labels.
    consensus_compute(project=project)
    assert consensus_of(project) == caught_up


# A worker killed in the middle of a task ------------------------------------------------------

N_ITEMS = 60
KILLED = "faults-killed"
# A redelivered task reaches a new worker this long after it was taken by the one that died.
VISIBILITY_SECONDS = 2
REDELIVERY = {"QUORUM_BROKER_VISIBILITY_TIMEOUT": str(VISIBILITY_SECONDS)}


def start_next_worker(
    *, redis_url: str, log: Path, name: str, env: dict[str, str]
) -> subprocess.Popen[bytes]:
    """Start a worker that takes over the task of one just killed.

    kombu's Redis transport looks for tasks past their visibility timeout when a worker starts
    and then only about every 100 s: a worker started before the timeout has passed would wait
    that long. Starting it once the timeout has passed since the kill (the task was taken before
    then) makes the takeover prompt."""
    time.sleep(VISIBILITY_SECONDS + 1)
    return start_worker(redis_url=redis_url, log=log, name=name, env=env)


def import_votes(project: Project, n: int = N_ITEMS) -> None:
    """n items with their predictions, and three labellers per item: w1 and w2 always give the
    expected answer, w3 errs on every fifth item, so that Dawid-Skene has something to estimate."""
    predictions = [
        {"external_id": f"i{k}", "payload": {"text": f"item {k}"}, "model_version": "m1",
         "probabilities": {"match": 0.4 + k / 200, "no_match": 0.6 - k / 200}}
        for k in range(n)
    ]  # fmt: skip
    stream = io.BytesIO("\n".join(map(json.dumps, predictions)).encode())
    predictions_import(project=project, stream=stream, fmt="jsonl")
    rows = []
    for k in range(n):
        right = expected(f"i{k}")
        wrong = "no_match" if right == "match" else "match"
        for worker in ("w1", "w2", "w3"):
            label = wrong if worker == "w3" and k % 5 == 0 else right
            rows.append(json.dumps({"external_id": f"i{k}", "labeller": worker, "label": label}))
    labels_import(project=project, stream=io.BytesIO("\n".join(rows).encode()), fmt="jsonl")


@pytest.fixture
def blocker() -> Iterator[psycopg.Connection[Any]]:
    """A connection of the test's own that holds locks the worker will wait on."""
    db = connection.settings_dict
    params = {"dbname": db["NAME"], "user": db["USER"], "password": db["PASSWORD"] or None}
    params |= {"host": db["HOST"] or None, "port": db["PORT"] or None}
    with psycopg.connect(**params, application_name="faults-blocker") as blocking:
        yield blocking


def waiting_backend(name: str, statement: str) -> int | None:
    """The pid of the backend named `name` waiting on a lock in a statement containing
    `statement` (the worker is then in the middle of its task), or None."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database() AND wait_event_type = 'Lock' AND query LIKE %s",
            [name, f"%{statement}%"],
        )
        row = cursor.fetchone()
    return int(row[0]) if row else None


def backends_of(name: str) -> int:
    """How many backends of this test database the processes named `name` still hold."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            [name],
        )
        return int(cursor.fetchone()[0])


def kill_while_waiting(
    worker: subprocess.Popen[bytes], name: str, statement: str, log: Path
) -> None:
    """SIGKILL the worker once it waits on `statement`, and end its backend.

    A backend waiting on a lock notices its client is gone only once it has the lock, and then
    finishes the statement it was sent: ending it now is the worker dying before it sent that
    statement (its transaction, if any, is rolled back either way)."""
    pid = wait_until(
        lambda: waiting_backend(name, statement), timeout=60, what=f"{statement}…", log=log
    )
    stop(worker, kill=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    wait_until(lambda: backends_of(name) == 0, timeout=30, what=f"the end of {name}'s backend")


def labeller_figures(project: Project) -> dict[str, tuple[Any, ...]]:
    rows = Labeller.objects.filter(project=project)
    return {w.worker_id: (w.n_labels, w.accuracy, w.agreement, w.flags) for w in rows}


def test_a_recomputation_whose_worker_is_killed_runs_again_on_a_new_worker_and_ends_as_a_clean_run(
    project: Project,
    own_redis: RedisServer,
    workers: list[subprocess.Popen[bytes]],
    blocker: psycopg.Connection[Any],
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.CONSENSUS_DEBOUNCE_SECONDS = 1
    import_votes(project)
    log = tmp_path / "worker.log"
    first = start_worker(redis_url=own_redis.url, log=log, name=KILLED, env=REDELIVERY)
    workers.append(first)
    # The recomputation writes consensus and item states, then the labellers' figures: holding
    # one labeller's row stops it there, halfway through its writes.
    held = Labeller.objects.get(project=project, worker_id="w2").pk
    blocker.execute("SELECT 1 FROM labelling_labeller WHERE id = %s FOR UPDATE", [held])

    consensus_schedule(project_id=project.pk)
    kill_while_waiting(first, KILLED, "UPDATE labelling_labeller", log)
    blocker.rollback()

    # Nothing of the killed run was kept.
    assert not Consensus.objects.filter(item__project=project).exists()
    assert set(Item.objects.filter(project=project).values_list("state", flat=True)) == {
        "collecting"
    }
    workers.append(
        start_next_worker(redis_url=own_redis.url, log=log, name="faults-second", env=REDELIVERY)
    )
    wait_until(
        lambda: Consensus.objects.filter(item__project=project).count() == N_ITEMS,
        timeout=60,
        what="the recomputation on the new worker",
        log=log,
    )
    recovered, figures = consensus_of(project), labeller_figures(project)
    assert {c[0] for c in recovered.values()} == {"match", "no_match"}
    assert {e: c[0] for e, c in recovered.items()} == {e: expected(e) for e in recovered}
    consensus_compute(project=project)
    assert consensus_of(project) == recovered
    assert labeller_figures(project) == figures


def test_a_release_whose_worker_is_killed_is_published_once_by_the_next_worker_as_a_clean_run(
    project: Project,
    own_redis: RedisServer,
    workers: list[subprocess.Popen[bytes]],
    blocker: psycopg.Connection[Any],
    settings: Any,
    tmp_path: Path,
) -> None:
    import_votes(project)
    consensus_compute(project=project)
    approved = Item.objects.filter(project=project, state="approved").count()
    assert approved > 0
    exports = tmp_path / "exports"
    settings.EXPORT_STORAGE = exports.as_uri()
    env = {**REDELIVERY, "EXPORT_STORAGE": exports.as_uri()}
    log = tmp_path / "worker.log"
    # The data file is written, then the release is numbered under a lock: the first worker
    # dies waiting for that lock, before anything is published.
    blocker.execute("SELECT pg_advisory_lock(%s, %s)", [ADVISORY_NAMESPACE, project.pk])
    blocker.commit()
    workers.append(start_worker(redis_url=own_redis.url, log=log, name=KILLED, env=env))
    job = job_release_start(project=project, user=None, params=ReleaseRequest().as_params())
    kill_while_waiting(workers[-1], KILLED, "pg_advisory_xact_lock", log)
    job.refresh_from_db()
    assert job.status == "running"
    assert not Release.objects.filter(project=project).exists()
    assert not (exports / project.slug).exists()

    # The second worker publishes and records the release, and dies before it marks the job
    # done (it waits for the job's row, which the test holds).
    second = "faults-second"
    workers.append(start_next_worker(redis_url=own_redis.url, log=log, name=second, env=env))
    wait_until(
        lambda: waiting_backend(second, "pg_advisory_xact_lock"),
        timeout=60,
        what="publish",
        log=log,
    )
    blocker.execute("SELECT 1 FROM labelling_job WHERE id = %s FOR NO KEY UPDATE", [job.pk])
    blocker.execute("SELECT pg_advisory_unlock(%s, %s)", [ADVISORY_NAMESPACE, project.pk])
    kill_while_waiting(workers[-1], second, 'UPDATE "labelling_job"', log)
    blocker.rollback()
    assert Release.objects.filter(project=project).count() == 1
    job.refresh_from_db()
    assert job.status == "running"

    workers.append(
        start_next_worker(redis_url=own_redis.url, log=log, name="faults-third", env=env)
    )
    wait_until(
        lambda: Job.objects.filter(pk=job.pk, status="succeeded").exists(),
        timeout=60,
        what="the job's end on the third worker",
        log=log,
    )
    release = Release.objects.get(project=project)
    job.refresh_from_db()
    assert (release.version, release.row_count, release.job_id) == (1, approved, job.pk)
    assert job.result["release"] == release.pk and job.result["sha256"] == release.sha256
    assert sorted(p.name for p in (exports / project.slug).iterdir()) == ["v1"]
    data = exports / project.slug / "v1" / release.data_file
    assert hashlib.sha256(data.read_bytes()).hexdigest() == release.sha256
    # A clean release of the same items has the same data file.
    staged = list((exports / STAGING).iterdir())
    assert len(staged) == 1, "the first worker's staging folder, left when it was killed"
    long_ago = time.time() - STALE_STAGING_SECONDS - 60
    os.utime(staged[0], (long_ago, long_ago))
    clean = release_create(project=project)
    assert (clean.version, clean.row_count, clean.sha256) == (2, release.row_count, release.sha256)
    # Building it deleted the staging folder that no release will ever finish.
    assert list((exports / STAGING).iterdir()) == []


# The database connection dropped ---------------------------------------------------------------

WEB = "faults-web"


@dataclass
class Answer:
    """An HTTP response as the test reads it."""

    status: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http(url: str, *, headers: dict[str, str], data: dict[str, Any] | None = None) -> Answer:
    """One request to the web server (a POST of JSON when `data` is given)."""
    body = json.dumps(data).encode() if data is not None else None
    request = urllib.request.Request(
        url, data=body, headers={**headers, "Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as refused:
        return Answer(refused.code, refused.headers, refused.read())


def web_backends() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
            "AND datname = current_database()",
            [WEB],
        )
        return [int(pid) for (pid,) in cursor.fetchall()]


def terminate(pid: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def dropped_mid_request(
    blocker: psycopg.Connection[Any], send: Callable[[], Answer], log: Path
) -> Answer:
    """Send a request that waits on the project table (the test holds it locked), end the web
    server's database connection while it waits, and return the response."""
    blocker.execute("LOCK TABLE labelling_project IN ACCESS EXCLUSIVE MODE")
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(send)
        pid = wait_until(lambda: waiting_backend(WEB, ""), timeout=30, what="the wait", log=log)
        terminate(pid)
        answer = pending.result(timeout=60)
    blocker.rollback()
    return answer


def test_a_dropped_database_connection_is_a_clean_503_and_the_next_request_reconnects(
    project: Project,
    own_redis: RedisServer,
    blocker: psycopg.Connection[Any],
    tmp_path: Path,
) -> None:
    queued_project(project, n=2, overlap=(1, 1))
    labeller, token = labeller_create(project=project, username="cora-crowd", role=Role.CROWD)
    browser = Client()
    browser.force_login(labeller.user)
    log = tmp_path / "web.log"
    server, url = start_web(
        redis_url=own_redis.url, log=log, name=WEB, env={"QUORUM_NEW_LABELLER_GOLD": "0"}
    )
    api = {"Authorization": f"Token {token}"}
    page = {"Cookie": f"sessionid={browser.cookies['sessionid'].value}"}
    try:
        first = http(f"{url}/api/v1/projects/pet-match/tasks/next", headers=api)
        assert first.status == 200, first.body
        lease = first.json()["lease"]

        # Dropped between two requests: the next one checks the connection and opens another.
        (before,) = web_backends()
        terminate(before)
        again = http(f"{url}/api/v1/projects/pet-match/tasks/next", headers=api)
        assert (again.status, again.json()["lease"]) == (200, lease)
        assert web_backends() != [before]

        # Dropped in the middle of a request: a 503 saying to retry, and nothing saved.
        submit = f"{url}/api/v1/leases/{lease}/label"
        answer = {"label": "match", "duration_ms": 1200}
        refused = dropped_mid_request(blocker, lambda: http(submit, headers=api, data=answer), log)
        assert refused.status == 503, refused.body
        assert refused.headers["Content-Type"] == "application/json"
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["code"] == "database_unavailable"
        assert "try again" in refused.json()["detail"]
        assert not Label.objects.filter(project=project).exists()
        saved = http(submit, headers=api, data=answer)
        assert saved.status == 201, saved.body
        assert Label.objects.filter(project=project).count() == 1

        # A page: the same, as HTML.
        label_page = f"{url}/label/pet-match/"
        refused = dropped_mid_request(blocker, lambda: http(label_page, headers=page), log)
        assert refused.status == 503, refused.body
        assert refused.headers["Content-Type"].startswith("text/html")
        assert int(refused.headers["Retry-After"]) > 0
        assert b"Try again shortly" in refused.body and b"Traceback" not in refused.body
        assert http(label_page, headers=page).status == 200
    finally:
        stop(server)


# A lease holder who vanishes -------------------------------------------------------------------


def next_item(client: APIClient) -> tuple[int, str] | None:
    """Lease the next item: (lease, external id), or None when nothing is left."""
    offered = client.get("/api/v1/projects/pet-match/tasks/next")
    assert offered.status_code in (200, 204), offered.content
    if offered.status_code == 204:
        return None
    return offered.json()["lease"], offered.json()["item"]["external_id"]


def answer_lease(client: APIClient, lease: int, label: str) -> Any:
    return client.post(f"/api/v1/leases/{lease}/label", {"label": label}, format="json")


def overlap_holds(project: Project) -> None:
    """Every queue entry counts exactly its item's valid labels and open leases, never more
    labels than it needed, and no labeller labelled an item twice."""
    for entry in QueueEntry.objects.filter(project=project).select_related("item"):
        labels = Label.objects.filter(item=entry.item, state="valid")
        open_leases = Lease.objects.filter(item=entry.item, state="open", is_gold=False)
        assert entry.labels_count == labels.count() <= entry.needed, entry.item.external_id
        assert entry.open_leases == open_leases.count(), entry.item.external_id
        labellers = list(labels.values_list("labeller_id", flat=True))
        assert len(labellers) == len(set(labellers)), entry.item.external_id


def test_an_item_whose_labeller_vanished_goes_to_another_once_the_lease_expires(
    project: Project,
    client_for: Callable[..., APIClient],
    own_redis: RedisServer,
    workers: list[subprocess.Popen[bytes]],
    settings: Any,
    tmp_path: Path,
) -> None:
    settings.NEW_LABELLER_GOLD = 0
    settings.LEASE_SECONDS = 5
    queued_project(project, n=2, overlap=(2, 2))
    gone, bob, carol, dan = (client_for(project, n, Role.CROWD) for n in ("al", "bob", "cy", "dan"))
    log = tmp_path / "worker.log"
    # The periodic lease expiry every second instead of every 30.
    timing = {"QUORUM_EXPIRE_LEASES_SECONDS": "1"}
    workers.append(
        start_worker(redis_url=own_redis.url, log=log, name="faults-leases", beat=True, env=timing)
    )

    vanished = next_item(gone)
    assert vanished is not None and vanished[1] == "i0"
    taken = next_item(bob)
    assert taken is not None and taken[1] == "i0"
    assert answer_lease(bob, taken[0], "match").status_code == 201
    # i0 holds its second place for the labeller who vanished: the next labeller gets i1.
    other = next_item(carol)
    assert other is not None and other[1] == "i1"
    assert answer_lease(carol, other[0], "match").status_code == 201
    overlap_holds(project)

    # Nobody asks for anything: the periodic expiry gives the place back.
    wait_until(
        lambda: Lease.objects.filter(pk=vanished[0], state="expired").exists(),
        timeout=60,
        what="the expiry of the vanished labeller's lease",
        log=log,
    )
    overlap_holds(project)
    offered = next_item(dan)
    assert offered is not None and offered[1] == "i0"
    assert answer_lease(dan, offered[0], "no_match").status_code == 201

    late = answer_lease(gone, vanished[0], "match")
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    # Back, they get the item that still wants a label.
    back = next_item(gone)
    assert back is not None and back[1] == "i1"
    counts = dict(
        QueueEntry.objects.filter(project=project).values_list("item__external_id", "labels_count")
    )
    assert counts == {"i0": 2, "i1": 1}
    assert not Label.objects.filter(labeller__user__username="al").exists()
    overlap_holds(project)
