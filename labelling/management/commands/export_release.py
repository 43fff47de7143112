"""`export_release SLUG [--format jsonl|csv|manifest] [--out DIR] [--include-personal]`: freeze a
new release."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from labelling.management.base import QuorumCommand
from labelling.releases.formats import FORMATS
from labelling.releases.rows import Filters
from labelling.services.releases import ReleaseRequest, release_create


class Command(QuorumCommand):
    help = (
        "Freeze the project's approved and resolved items as its next release; prints the "
        "version, row count and sha256 of the data file."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--format", choices=FORMATS, default="jsonl")
        parser.add_argument("--out", help="write the release folder under DIR (default: storage)")
        parser.add_argument("--split", help="only items of this split")
        parser.add_argument("--source", help="only items of this source")
        parser.add_argument(
            "--since-last", action="store_true", help="only items decided since the last release"
        )
        parser.add_argument(
            "--override-checks",
            metavar="REASON",
            default="",
            help="release even though data checks fail; the reason goes into the manifest",
        )
        parser.add_argument(
            "--include-personal",
            action="store_true",
            help="keep the payload fields the project marks personal (left out by default); "
            "the manifest records the choice",
        )
        parser.add_argument(
            "--only-check",
            action="append",
            dest="checks",
            help="override only this check (repeatable; default: every failed check)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options["slug"])
        out = options["out"]
        request = ReleaseRequest(
            fmt=options["format"],
            filters=Filters(
                since_last=options["since_last"], split=options["split"], source=options["source"]
            ),
            override_reason=options["override_checks"],
            override_checks=tuple(options["checks"]) if options["checks"] else None,
            include_personal=options["include_personal"],
        )
        release = release_create(
            project=project,
            request=request,
            storage_url=Path(out).resolve().as_uri() if out else None,
        )
        self.stdout.write(
            f"release v{release.version}: {release.row_count} rows, sha256 {release.sha256}"
        )
        self.stdout.write(f"  {release.location}/{release.data_file}")
        if project.personal_fields:
            kept = "included" if request.include_personal else "left out"
            self.stdout.write(f"  personal fields {kept}: {', '.join(project.personal_fields)}")
        for check in release.checks:
            verdict = "overridden" if check["overridden"] else "passed"
            self.stdout.write(f"  {check['check']}: {verdict}: {check['message']}")
