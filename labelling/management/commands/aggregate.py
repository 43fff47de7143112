"""`aggregate SLUG [--json]`: recompute consensus, agreement and labeller reliability now."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from labelling.management.base import QuorumCommand
from labelling.services.consensus import consensus_compute, state_counts


class Command(QuorumCommand):
    help = "Recompute consensus, agreement and labeller reliability; --json prints the report."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--json", action="store_true", help="print the full report as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options["slug"])
        report = consensus_compute(project=project)
        if options["json"]:
            self.stdout.write(json.dumps(report.as_dict(), indent=1, sort_keys=False))
            return
        agreement = ", ".join(
            f"{name} {value:.3f}" if value is not None else f"{name} n/a"
            for name, value in report.agreement.items()
        )
        states = ", ".join(f"{n} {state}" for state, n in sorted(state_counts(project).items()))
        flagged = sum(1 for figures in report.labellers.values() if figures["flags"])
        self.stdout.write(f"{len(report.items)} items: {states or 'none labelled'}")
        self.stdout.write(f"{len(report.labellers)} labellers, {flagged} flagged")
        self.stdout.write(f"agreement: {agreement or 'no labels'}")
