"""`backup [--out DIR]`: a consistent copy of the database (what `make backup` runs)."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.backups import BackupError, backup_create


class Command(BaseCommand):
    help = (
        "Write a consistent copy of the database to QUORUM_BACKUP_DIR (default var/backups): "
        "pg_dump's custom format on PostgreSQL, SQLite's online backup otherwise."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--out", help="the folder to write to (default QUORUM_BACKUP_DIR)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            path = backup_create(folder=Path(options["out"]) if options["out"] else None)
        except BackupError as exc:
            raise CommandError(exc.message, returncode=1) from None
        self.stdout.write(f"backup written: {path} ({path.stat().st_size} bytes)")
