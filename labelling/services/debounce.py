"""Recomputations asked for in bursts run once: one pending Celery task per project and kind."""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache

from core.cache import add as cache_add

logger = logging.getLogger("quorum.jobs")


def _pending_key(kind: str, project_id: int) -> str:
    return f"quorum:{kind}-pending:{project_id}"


def recompute_soon(*, kind: str, project_id: int, task: Any, seconds: int) -> None:
    """Send `task` for the project in `seconds`, unless one is pending already.

    A failed enqueue is logged, never raised: what asked for it is saved, and a later run (the
    periodic catch-up or the command) recomputes the project.
    """
    key = _pending_key(kind, project_id)
    try:
        # The cache is on Redis too: when Redis is down this raises, as the enqueue would.
        if not cache_add(key, seconds * 6):
            return
        task.apply_async((project_id,), countdown=seconds)
    except Exception:
        logger.exception(
            "could not schedule the %s of project %s; a later run catches up", kind, project_id
        )
        _forget(key)


def _forget(key: str) -> None:
    """Drop the pending mark of a run that was never sent, if the cache can be reached."""
    try:
        cache.delete(key)
    except Exception:
        # Redis is down: the mark expires with it, or after its timeout.
        logger.warning("could not clear %s; it expires by itself", key)


def recompute_started(*, kind: str, project_id: int) -> None:
    """The pending run has started: changes from now on ask for another."""
    _forget(_pending_key(kind, project_id))
