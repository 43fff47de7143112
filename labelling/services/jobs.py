"""Background jobs: create them, send them to the workers, run them, and report progress."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from core.exceptions import QuorumError
from labelling.models import Job, Project, Release
from labelling.services.imports import predictions_import

logger = logging.getLogger("quorum.jobs")
PROGRESS_TTL = 24 * 3600


def _progress_key(job_id: int) -> str:
    return f"quorum:job:{job_id}:progress"


def job_live_progress(job: Job) -> float:
    """The job's progress: live from the cache while it runs, else as stored."""
    if job.status == Job.Status.RUNNING:
        try:
            return float(cache.get(_progress_key(job.pk), job.progress))
        except Exception:
            # Redis is down: the stored figure is older, but the job's page still answers.
            logger.warning("live progress of job %s unavailable: the cache is down", job.pk)
    return job.progress


def _enqueue(job: Job) -> None:
    from labelling import tasks

    try:
        tasks.run_job.delay(job.pk)
    except Exception:
        # The job stays queued in the database; `resend_queued_jobs` sends it again once the
        # broker is back. The request that created it must not fail for this.
        logger.exception("could not send job %s to the job queue; it will be sent again", job.pk)


@transaction.atomic
def job_import_start(
    *, project: Project, user: Any, content: bytes | Any, filename: str, fmt: str
) -> Job:
    """Store an uploaded prediction file and queue its import as a background job."""
    settings.UPLOAD_DIR.mkdir(parents=True, exist_ok=True)
    path = settings.UPLOAD_DIR / f"{uuid.uuid4().hex}.{fmt}"
    with open(path, "wb") as out:
        if isinstance(content, bytes):
            out.write(content)
        else:
            for chunk in content.chunks():
                out.write(chunk)
    job = Job.objects.create(
        project=project,
        kind=Job.Kind.IMPORT_PREDICTIONS,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        params={"path": str(path), "format": fmt, "filename": filename},
    )
    transaction.on_commit(lambda: _enqueue(job))
    return job


def _claim(job_id: int) -> Job | None:
    """Mark a queued (or interrupted) job as running; None if it already finished."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_id).first()
        if job is None or job.status in (Job.Status.SUCCEEDED, Job.Status.FAILED):
            return None
        job.status = Job.Status.RUNNING
        job.started_at = timezone.now()
        job.save(update_fields=["status", "started_at", "updated_at"])
        return job


def _finish(job: Job, *, result: dict[str, Any] | None, error: dict[str, Any] | None) -> None:
    # Read the live progress before the status changes: a failed job shows how far it got.
    job.progress = 1.0 if not error else job_live_progress(job)
    job.status = Job.Status.FAILED if error else Job.Status.SUCCEEDED
    job.result, job.error = result, error
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "result", "error", "progress", "finished_at", "updated_at"])
    cache.delete(_progress_key(job.pk))


@transaction.atomic
def job_queue_start(
    *,
    project: Project,
    user: Any,
    policy: dict[str, Any] | None,
    budget: int | None,
    model_version: str | None,
) -> Job:
    """Queue a project's predictions in the background (for large projects)."""
    job = Job.objects.create(
        project=project,
        kind=Job.Kind.QUEUE,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        params={"policy": policy, "budget": budget, "model_version": model_version},
    )
    transaction.on_commit(lambda: _enqueue(job))
    return job


@transaction.atomic
def job_release_start(*, project: Project, user: Any, params: dict[str, Any]) -> Job:
    """Queue a release of the project as a background job (see services/releases.py)."""
    job = Job.objects.create(
        project=project,
        kind=Job.Kind.RELEASE,
        created_by=user if getattr(user, "is_authenticated", False) else None,
        params=params,
    )
    transaction.on_commit(lambda: _enqueue(job))
    return job


def _run_release(job: Job) -> dict[str, Any]:
    from labelling.services.releases import ReleaseRequest, release_create

    def progress(done: int, total: int) -> None:
        cache.set(_progress_key(job.pk), min(done / max(total, 1), 0.99), PROGRESS_TTL)

    # A worker that died after publishing but before recording the job's end hands the job to
    # another: the release it published is the job's result, not a reason for a second one.
    release = Release.objects.filter(job=job).first() or release_create(
        project=job.project,
        user=job.created_by,
        request=ReleaseRequest.from_params(job.params),
        progress=progress,
        job=job,
    )
    return {
        "release": release.pk,
        "version": release.version,
        "row_count": release.row_count,
        "sha256": release.sha256,
        "url": f"/api/v1/releases/{release.pk}",
    }


def _run_import(job: Job) -> dict[str, Any]:
    path = Path(job.params["path"])
    if not path.exists():
        raise QuorumError("the uploaded file is gone (is the upload folder shared and kept?)")
    size = max(path.stat().st_size, 1)

    def progress(done: int) -> None:
        cache.set(_progress_key(job.pk), min(done / size, 0.99), PROGRESS_TTL)

    with open(path, "rb") as stream:
        result = predictions_import(
            project=job.project, stream=stream, fmt=job.params["format"], progress=progress
        )
    return result.as_dict()


def _run_queue(job: Job) -> dict[str, Any]:
    from labelling.policy import parse_policy
    from labelling.services.queueing import queue_select

    policy = job.params.get("policy")
    result = queue_select(
        project=job.project,
        policy=parse_policy(policy) if policy is not None else None,
        budget=job.params.get("budget"),
        model_version=job.params.get("model_version"),
        user=job.created_by,
    )
    return result.as_dict()


RUNNERS = {
    Job.Kind.IMPORT_PREDICTIONS: _run_import,
    Job.Kind.QUEUE: _run_queue,
    Job.Kind.RELEASE: _run_release,
}


def job_run(*, job_id: int) -> None:
    """Run a job to the end; safe to call again (a finished job is left as it is)."""
    job = _claim(job_id)
    if job is None:
        return
    try:
        result = RUNNERS[Job.Kind(job.kind)](job)
    except QuorumError as exc:
        _finish(job, result=None, error=exc.as_dict())
    except Exception:
        # A bug, not bad input: record it so the job does not look alive for ever. (A worker
        # that dies instead leaves the job running, and acks_late hands it to another.)
        logger.exception("job %s failed", job.pk)
        detail = "the job failed on an internal error; the server log has the details"
        _finish(job, result=None, error={"detail": detail, "code": "internal_error"})
    else:
        _finish(job, result=result, error=None)
    # The upload has reached its verdict; after a crash it stays for the retry.
    if "path" in job.params:
        Path(job.params["path"]).unlink(missing_ok=True)


def jobs_resend_queued(*, older_than_seconds: int = 60) -> int:
    """Send again the jobs that never reached a worker (the broker was down); return how many."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    stale = list(Job.objects.filter(status=Job.Status.QUEUED, created_at__lt=cutoff))
    for job in stale:
        _enqueue(job)
    return len(stale)
