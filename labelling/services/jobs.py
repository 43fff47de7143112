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
from labelling.models import Job, Project
from labelling.services.imports import predictions_import

logger = logging.getLogger("quorum.jobs")
PROGRESS_TTL = 24 * 3600


def _progress_key(job_id: int) -> str:
    return f"quorum:job:{job_id}:progress"


def job_live_progress(job: Job) -> float:
    """The job's progress: live from the cache while it runs, else as stored."""
    if job.status == Job.Status.RUNNING:
        return float(cache.get(_progress_key(job.pk), job.progress))
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
    job.status = Job.Status.FAILED if error else Job.Status.SUCCEEDED
    job.result, job.error = result, error
    job.progress = 1.0 if not error else job_live_progress(job)
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "result", "error", "progress", "finished_at", "updated_at"])
    cache.delete(_progress_key(job.pk))


def job_run(*, job_id: int) -> None:
    """Run a job to the end; safe to call again (a finished job is left as it is)."""
    job = _claim(job_id)
    if job is None:
        return
    path = Path(job.params["path"])
    size = max(path.stat().st_size, 1) if path.exists() else 1

    def progress(done: int) -> None:
        cache.set(_progress_key(job.pk), min(done / size, 0.99), PROGRESS_TTL)

    try:
        with open(path, "rb") as stream:
            result = predictions_import(
                project=job.project, stream=stream, fmt=job.params["format"], progress=progress
            )
    except QuorumError as exc:
        _finish(job, result=None, error=exc.as_dict())
    except FileNotFoundError:
        _finish(
            job, result=None, error={"detail": "the uploaded file is gone", "code": "missing_file"}
        )
        return
    else:
        _finish(job, result=result.as_dict(), error=None)
    path.unlink(missing_ok=True)


def jobs_resend_queued(*, older_than_seconds: int = 60) -> int:
    """Send again the jobs that never reached a worker (the broker was down); return how many."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    stale = list(Job.objects.filter(status=Job.Status.QUEUED, created_at__lt=cutoff))
    for job in stale:
        _enqueue(job)
    return len(stale)
