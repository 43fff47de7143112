"""`queue SLUG [--policy FILE] [--budget N]`: select the predictions that need people."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from labelling.management.base import QuorumCommand
from labelling.policy import parse_policy
from labelling.services.queueing import queue_select


class Command(QuorumCommand):
    help = "Queue the items whose predictions need human labels; prints how many each rule took."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--policy", help="a queue policy (JSON); stored as the next version")
        parser.add_argument("--budget", type=int, help="overrides the policy's budget")
        parser.add_argument("--model-version", help="default: the latest imported model version")

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options["slug"])
        policy = parse_policy(self.read_json(options["policy"])) if options["policy"] else None
        result = queue_select(
            project=project,
            policy=policy,
            budget=options["budget"],
            model_version=options["model_version"],
        )
        self.stdout.write(
            f"policy v{result.policy_version}, model {result.model_version}: "
            f"{result.queued} of {result.considered} eligible items queued"
        )
        for rule in result.by_rule:
            self.stdout.write(f"  {rule['rule']}: {rule['queued']}")
        if result.crossed_threshold:
            self.stdout.write(
                f"{len(result.crossed_threshold)} queued items cross the threshold under "
                f"{result.model_version}: {', '.join(result.crossed_threshold[:10])}"
            )
