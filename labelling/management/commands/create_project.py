"""`create_project --spec FILE`: create, or update in place, the project a spec describes."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from labelling.management.base import QuorumCommand
from labelling.services.projects import project_create_or_update
from labelling.spec import parse_spec


class Command(QuorumCommand):
    help = "Create, or update in place, the project that a JSON spec file describes."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--spec", required=True, help="path of the project spec (JSON)")

    def handle(self, *args: Any, **options: Any) -> None:
        spec = parse_spec(self.read_json(options["spec"]))
        project, created = project_create_or_update(spec=spec)
        verb = "created" if created else "updated"
        self.stdout.write(f"{verb} project {project.slug} ({len(project.labels)} labels)")
