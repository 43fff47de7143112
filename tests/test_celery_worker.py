"""A real Celery worker on Redis runs an import job against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from core.celery import app as celery_app
from labelling.models import Item, Job, Prediction, Project
from labelling.services.jobs import job_import_start
from tests.processes import database_url_of_this_run

REPO = Path(__file__).resolve().parents[1]
CELERY = Path(sys.executable).with_name("celery")
JOB_TIMEOUT = 60.0
CONTENT = (
    b'{"external_id": "w1", "payload": {"pet": "cat"}, "model_version": "m1", '
    b'"probabilities": {"match": 0.7, "no_match": 0.3}}\n'
    b'{"external_id": "w2", "payload": {"pet": "dog"}, "model_version": "m1", '
    b'"probabilities": {"match": 0.2, "no_match": 0.8}}\n'
)

pytestmark = [pytest.mark.needs_postgres, pytest.mark.needs_redis]


@pytest.fixture
def job_queue() -> Iterator[str]:
    """A Celery queue of this test's own, so no other worker on this Redis takes its job."""
    queue = f"quorum-test-{uuid.uuid4().hex[:12]}"
    before = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    yield queue
    celery_app.conf.task_default_queue = before
    # The queue's list and kombu's binding sets would otherwise stay in Redis for ever.
    client = redis.Redis.from_url(settings.REDIS_URL)
    stale = list(client.scan_iter(match=f"*{queue}*"))
    if stale:
        client.delete(*stale)
    client.close()


@pytest.fixture
def worker(job_queue: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker subprocess on the test database, consuming only `job_queue`."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url_of_this_run(),
        "REDIS_URL": settings.REDIS_URL,
        "SECRET_KEY": settings.SECRET_KEY,
    }
    log = (tmp_path / "worker.log").open("wb")
    command = [str(CELERY), "-A", "core", "worker", "--pool=solo", "--concurrency=1", "-l", "info"]
    process = subprocess.Popen(
        [*command, "-Q", job_queue, "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        stop(process)
        log.close()


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (a warm shutdown), then SIGKILL if the worker has not gone within 10 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def wait_for(job: Job, worker: subprocess.Popen[bytes], log: Path) -> Job:
    """Poll the job until it has finished, the worker has died, or the time is up."""
    deadline = time.monotonic() + JOB_TIMEOUT
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in (Job.Status.SUCCEEDED, Job.Status.FAILED):
            return job
        assert worker.poll() is None, f"the worker exited:\n{log.read_text()}"
        time.sleep(0.2)
    pytest.fail(f"job still {job.status} after {JOB_TIMEOUT:.0f} s; worker log:\n{log.read_text()}")


@pytest.mark.django_db(transaction=True)
def test_a_celery_worker_on_redis_runs_an_import_job(
    make_project: Callable[..., Project], worker: subprocess.Popen[bytes], tmp_path: Path
) -> None:
    assert not celery_app.conf.task_always_eager, "REDIS_URL is set: jobs must not run in-process"
    project = make_project()

    job = job_import_start(
        project=project, user=None, content=CONTENT, filename="w.jsonl", fmt="jsonl"
    )

    job = wait_for(job, worker, tmp_path / "worker.log")
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert job.progress == 1.0
    assert job.result == {"rows": 2, "new_items": 2, "new_predictions": 2, "unchanged": 0}
    assert job.started_at is not None and job.finished_at is not None
    assert set(Item.objects.filter(project=project).values_list("external_id", flat=True)) == {
        "w1",
        "w2",
    }
    assert Prediction.objects.filter(item__project=project).count() == 2
    assert not Path(job.params["path"]).exists()
