"""`restore PATH [--replace]`: load a backup into the database (what `make restore` runs)."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from core.backups import BackupError, backup_restore


class Command(BaseCommand):
    help = (
        "Restore a backup made by `backup` into the database DATABASE_URL names; it must be "
        "empty unless --replace is given."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("path", help="the backup file (var/backups/quorum-….dump or .sqlite3)")
        parser.add_argument(
            "--replace", action="store_true", help="overwrite a database that already holds data"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["path"])
        try:
            pending = backup_restore(path=path, replace=options["replace"])
        except BackupError as exc:
            raise CommandError(exc.message, returncode=1) from None
        self.stdout.write(f"restored {path}")
        if pending:
            self.stdout.write(
                f"{pending} migrations of this code are not applied yet: run manage.py migrate"
            )
