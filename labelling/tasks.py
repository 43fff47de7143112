"""Celery tasks: each takes ids, calls one service, and is safe to run twice."""

from __future__ import annotations

from celery import shared_task

from labelling.services import jobs


@shared_task(name="labelling.run_job", acks_late=True)
def run_job(job_id: int) -> None:
    """Run a background job (an import…) by id."""
    jobs.job_run(job_id=job_id)


@shared_task(name="labelling.expire_leases", acks_late=True)
def expire_leases() -> int:
    """Give the items of expired leases back to the queue."""
    from labelling.services.floors import queue_epochs_raise
    from labelling.services.leasing import leases_expire

    # Also the floors' safety net: an epoch raise lost between a commit and its callback voids
    # floors within one period (labelling/services/floors.py).
    queue_epochs_raise()
    return leases_expire()


@shared_task(name="labelling.aggregate_project", acks_late=True)
def aggregate_project(project_id: int) -> None:
    """Recompute a project's consensus, item states and labeller reliability."""
    from labelling.models import Project
    from labelling.releases.prepared import lines_prepare
    from labelling.services.consensus import consensus_run

    consensus_run(project_id=project_id)
    # The items it decided: their release lines, written now rather than by the next release.
    project = Project.objects.filter(pk=project_id).first()
    if project is not None:
        lines_prepare(project)


@shared_task(name="labelling.prepare_release_lines", acks_late=True)
def prepare_release_lines() -> int:
    """Prepare the release lines every project's decided items lack (decided by an expert, or
    changed since): releases read them instead of building them."""
    from labelling.releases.prepared import lines_prepare_all

    return lines_prepare_all()


@shared_task(name="labelling.aggregate_stale_projects")
def aggregate_stale_projects() -> int:
    """Recompute the projects whose labels changed since their last consensus."""
    from labelling.services.consensus import consensus_catch_up

    return consensus_catch_up()


@shared_task(name="labelling.resend_queued_jobs")
def resend_queued_jobs() -> int:
    """Send again the jobs that never reached a worker."""
    return jobs.jobs_resend_queued()


@shared_task(name="labelling.sync_crowd_batches", acks_late=True)
def sync_crowd_batches() -> int:
    """Take the work outside crowd platforms hold, pay or refuse it, finish closing batches."""
    from labelling.crowd.services import crowd_sync_all

    return crowd_sync_all()


@shared_task(name="labelling.evaluate_project", acks_late=True)
def evaluate_project(project_id: int) -> None:
    """Evaluate every model version of a project on its problems, on the latest trusted labels."""
    from labelling.services.evaluation import evaluation_run

    evaluation_run(project_id=project_id)
