"""`import_gold SLUG FILE`: mark items as gold with known answers."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from labelling.importing.rows import FORMATS, detect_format
from labelling.management.base import QuorumCommand
from labelling.services.gold import gold_import


class Command(QuorumCommand):
    help = "Mark items as gold with known answers (.jsonl or .csv); any error imports nothing."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("file")
        parser.add_argument("--format", choices=FORMATS, help="overrides the file's extension")

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options["slug"])
        fmt = detect_format(options["file"], options["format"])
        try:
            with open(options["file"], "rb") as stream:
                result = gold_import(project=project, stream=stream, fmt=fmt)
        except OSError as exc:
            raise CommandError(f"cannot read {options['file']}: {exc.strerror}") from None
        self.stdout.write(
            f"rows: {result.rows}, newly gold: {result.marked}, changed: {result.changed}, "
            f"unchanged: {result.unchanged}"
        )
