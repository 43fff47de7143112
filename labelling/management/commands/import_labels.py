"""`import_labels SLUG FILE`: record labels collected elsewhere."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from labelling.importing.rows import FORMATS, detect_format
from labelling.management.base import QuorumCommand
from labelling.services.labels import labels_import


class Command(QuorumCommand):
    help = "Record labels collected elsewhere, one labeller per distinct `labeller`."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("file")
        parser.add_argument("--format", choices=FORMATS, help="overrides the file's extension")

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options["slug"])
        fmt = detect_format(options["file"], options["format"])
        try:
            with open(options["file"], "rb") as stream:
                result = labels_import(project=project, stream=stream, fmt=fmt)
        except OSError as exc:
            raise CommandError(f"cannot read {options['file']}: {exc.strerror}") from None
        self.stdout.write(
            f"rows: {result.rows}, new items: {result.new_items}, new labellers: "
            f"{result.new_labellers}, new labels: {result.new_labels}, unchanged: "
            f"{result.unchanged} (batch {result.batch})"
        )
