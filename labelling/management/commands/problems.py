"""`problems SLUG [--json] [--fail-if-worse CANDIDATE --than DEPLOYED --min-harm H]`: every problem
with each model version's figures, freshly evaluated; with --fail-if-worse, exit with status 3 when
the candidate does worse than the deployed model on a problem of at least that harm."""

from __future__ import annotations

import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import CommandError

from labelling.management.base import QuorumCommand
from labelling.problems import check_comparison, compare_versions, problems_report
from labelling.services.evaluation import evaluation_compute

# Bad input exits with 1 (as every command); a candidate worse than the deployed model with 3.
WORSE = 3


def _rate(figures: dict[str, Any] | None) -> str:
    if not figures or figures["error_rate"] is None:
        return "—"
    return f"{figures['error_rate']:.3f} ({figures['errors']}/{figures['n']})"


class Command(QuorumCommand):
    help = (
        "List problems with every model version's error rate, false positives and negatives and "
        "AUC on the latest trusted labels; --fail-if-worse exits with 3 for a worse candidate."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--json", action="store_true", help="print the report as JSON")
        parser.add_argument("--fail-if-worse", metavar="CANDIDATE", help="a candidate version")
        parser.add_argument("--than", metavar="DEPLOYED", help="the deployed version")
        parser.add_argument(
            "--min-harm", default="0", metavar="H", help="only problems of harm ≥ H (default 0)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        project = self.project(options["slug"])
        candidate, deployed = options["fail_if_worse"], options["than"]
        if (candidate is None) != (deployed is None):
            raise CommandError("--fail-if-worse CANDIDATE and --than DEPLOYED go together")
        evaluation_compute(project=project)
        report = problems_report(project)
        comparison = None
        if candidate is not None:
            checked = check_comparison(report, candidate, deployed, options["min_harm"])
            comparison = compare_versions(
                report, candidate=checked[0], deployed=checked[1], min_harm=checked[2]
            )
            report["comparison"] = comparison.as_dict()
        if options["json"]:
            self.stdout.write(json.dumps(report, indent=1))
        else:
            self._print(report)
        if comparison is not None and not comparison.passed:
            names = [row["problem"] for row in comparison.worse + comparison.missing]
            raise CommandError(
                f"{comparison.candidate} is worse than {comparison.deployed} (or not evaluated) "
                f"on {len(names)} problem(s) of harm ≥ {comparison.min_harm:g}: {', '.join(names)}",
                returncode=WORSE,
            )

    def _print(self, report: dict[str, Any]) -> None:
        versions = [v["name"] for v in report["model_versions"]]
        self.stdout.write(
            f"{len(report['problems'])} problems, {len(versions)} model versions, threshold "
            f"{report['threshold']:g}"
        )
        for problem in report["problems"]:
            priority = "—" if problem["priority"] is None else f"{problem['priority']:.3f}"
            self.stdout.write(
                f"{problem['name']} (harm {problem['harm']:g}, {problem['status']}, "
                f"priority {priority})"
            )
            for name in versions:
                self.stdout.write(f"  {name}: {_rate(problem['figures'].get(name))}")
        if "comparison" in report:
            outcome = "passed" if report["comparison"]["passed"] else "FAILED"
            self.stdout.write(f"comparison: {outcome}")
