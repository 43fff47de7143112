"""Project wiring: settings, URLs, the Celery app, WSGI, and the small pieces every app shares."""

from core.celery import app as celery_app

__all__ = ["celery_app"]
