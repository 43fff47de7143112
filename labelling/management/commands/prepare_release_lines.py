"""`prepare_release_lines [SLUG]`: write the release lines of decided items ahead of a release."""

from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from labelling.management.base import QuorumCommand
from labelling.releases.prepared import lines_prepare, lines_prepare_all


class Command(QuorumCommand):
    help = (
        "Prepare the release lines of the project's decided items (every project's without a "
        "slug), so that the next release reads them instead of building them; PostgreSQL only. "
        "Workers do this after each consensus run and periodically."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug", nargs="?")

    def handle(self, *args: Any, **options: Any) -> None:
        start = time.perf_counter()
        if options["slug"]:
            written = lines_prepare(self.project(options["slug"]))
        else:
            written = lines_prepare_all()
        self.stdout.write(f"{written} lines prepared in {time.perf_counter() - start:.1f} s")
