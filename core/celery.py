"""The Celery application: broker from REDIS_URL, or in-process (eager) when it is unset."""

import logging
import os
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")

app = Celery("quorum")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@after_setup_logger.connect
@after_setup_task_logger.connect
def redact_worker_logs(logger: logging.Logger, **_: Any) -> None:
    """A worker replaces the root logger's handlers with its own: give them the same filter
    that keeps secrets out of the web processes' logs."""
    from core.logs import RedactSecrets

    for handler in logger.handlers:
        handler.addFilter(RedactSecrets())
