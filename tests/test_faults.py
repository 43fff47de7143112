"""Faults on the real services: Redis stopped, a worker killed, the database connection dropped,
a labeller who vanishes with a lease. Each runs on PostgreSQL with a Redis server and Celery
workers of its own (never the shared Redis), started and stopped by the test."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Sum
from rest_framework.test import APIClient

from core.celery import app as celery_app
from core.permissions import Role
from labelling.models import Consensus, Label, Project
from labelling.services.consensus import consensus_compute
from tests.labelling.test_leasing import queued_project
from tests.processes import RedisServer, app_on_redis, start_worker, stop, wait_until

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
    """The worker processes a test starts; every one still running is stopped at the end."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process)


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
