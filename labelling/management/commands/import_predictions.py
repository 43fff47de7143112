"""`import_predictions SLUG FILE`: add items and predictions from a JSON Lines or CSV file."""

from __future__ import annotations

import os
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from labelling.importing.rows import FORMATS, detect_format
from labelling.management.base import ProgressBar, QuorumCommand
from labelling.services.imports import predictions_import


class Command(QuorumCommand):
    help = "Import a prediction file (.jsonl or .csv); a file with any error imports nothing."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("file")
        parser.add_argument("--format", choices=FORMATS, help="overrides the file's extension")
        parser.add_argument(
            "--progress", action="store_true", help="show a progress bar even when not a terminal"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options["slug"])
        fmt = detect_format(options["file"], options["format"])
        try:
            stream = open(options["file"], "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise CommandError(f"cannot read {options['file']}: {exc.strerror}") from None
        bar = ProgressBar(os.fstat(stream.fileno()).st_size, enabled=options["progress"] or None)
        try:
            result = predictions_import(project=project, stream=stream, fmt=fmt, progress=bar)
        finally:
            bar.close()
            stream.close()
        self.stdout.write(
            f"rows: {result.rows}, new items: {result.new_items}, "
            f"new predictions: {result.new_predictions}, unchanged: {result.unchanged}"
        )
