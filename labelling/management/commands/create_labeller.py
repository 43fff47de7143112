"""`create_labeller SLUG USERNAME --role crowd|expert|engineer`: print an API token."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from core.permissions import Role
from labelling.management.base import QuorumCommand
from labelling.services.labellers import labeller_create


class Command(QuorumCommand):
    help = "Give a user (created if new) a role in a project and print their API token."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Role.values)

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options["slug"])
        _, token = labeller_create(
            project=project, username=options["username"], role=options["role"]
        )
        self.stdout.write(token)
