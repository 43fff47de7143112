"""Recomputations asked for in bursts run once: one pending Celery task per project and kind."""

from __future__ import annotations

import logging
from typing import Any

from django.core.cache import cache

logger = logging.getLogger("quorum.jobs")


def _pending_key(kind: str, project_id: int) -> str:
    return f"quorum:{kind}-pending:{project_id}"


def recompute_soon(*, kind: str, project_id: int, task: Any, seconds: int) -> None:
    """Send `task` for the project in `seconds`, unless one is pending already.

    A failed enqueue is logged, never raised: what asked for it is saved, and a later run (the
    periodic catch-up or the command) recomputes the project.
    """
    key = _pending_key(kind, project_id)
    if not cache.add(key, 1, timeout=seconds * 6):
        return
    try:
        task.apply_async((project_id,), countdown=seconds)
    except Exception:
        cache.delete(key)
        logger.exception(
            "could not schedule the %s of project %s; a later run catches up", kind, project_id
        )


def recompute_started(*, kind: str, project_id: int) -> None:
    """The pending run has started: changes from now on ask for another."""
    cache.delete(_pending_key(kind, project_id))
