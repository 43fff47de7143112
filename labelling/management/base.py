"""What every Quorum command shares: domain errors become a clean message and exit status 1."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from django.core.checks import Tags
from django.core.management.base import BaseCommand, CommandError

from core.exceptions import QuorumError
from labelling.models import Project


class QuorumCommand(BaseCommand):
    """A management command whose domain errors print every problem and exit with status 1."""

    # Every system check but the URL configuration's, which imports every view and the API
    # schema (about half a second of each command); the web server and `manage.py check` run it.
    requires_system_checks = [
        Tags.admin,
        Tags.caches,
        Tags.commands,
        Tags.compatibility,
        Tags.database,
        Tags.files,
        Tags.models,
        Tags.security,
        Tags.staticfiles,
        Tags.templates,
        Tags.translation,
    ]

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except QuorumError as exc:
            raise CommandError(exc.report(), returncode=1) from None

    def project(self, slug: str) -> Project:
        """The project with this slug, or a clear error."""
        project = Project.objects.filter(slug=slug).first()
        if project is None:
            raise CommandError(f"no project with slug {slug!r} (create it with create_project)")
        return project

    def read_json(self, path: str) -> Any:
        """A JSON file's content, or a clear error."""
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror}") from None
        except ValueError as exc:
            # Bad UTF-8, malformed JSON, or a number too long to read (over 4300 digits).
            raise CommandError(f"{path} is not valid UTF-8 JSON: {exc}") from None
        except RecursionError:
            raise CommandError(f"{path} is not valid UTF-8 JSON: nested too deep") from None


class ProgressBar:
    """A progress bar on standard error for long file imports; silent when not a terminal."""

    def __init__(self, total_bytes: int, *, enabled: bool | None = None) -> None:
        self.total = max(total_bytes, 1)
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.started = self.last = time.monotonic()

    def __call__(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        share = min(done / self.total, 1.0)
        filled = int(share * 30)
        rate = done / max(now - self.started, 1e-9) / 1e6
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {share:6.1%}  {rate:6.1f} MB/s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\r" + " " * 60 + "\r")
            sys.stderr.flush()
