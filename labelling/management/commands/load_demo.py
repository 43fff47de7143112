"""`load_demo`: load the handwritten-digits demo project once, with demo logins (DEBUG only)."""

from __future__ import annotations

from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.db import transaction

from core.permissions import Role
from labelling.management.base import QuorumCommand
from labelling.models import Project
from labelling.policy import parse_policy
from labelling.services.consensus import consensus_compute
from labelling.services.gold import gold_import
from labelling.services.imports import predictions_import
from labelling.services.labellers import labeller_create
from labelling.services.labels import labels_import
from labelling.services.projects import project_create_or_update
from labelling.services.queueing import queue_select
from labelling.spec import parse_spec

DEMO_DIR = Path(__file__).resolve().parents[2] / "demo" / "digits"
# Local demo logins: printed by `make run`, refused when DEBUG is off.
DEMO_USERS = {"engineer": Role.ENGINEER, "expert": Role.EXPERT, "crowd": Role.CROWD}
DEMO_PASSWORD = "quorum-demo"


class Command(QuorumCommand):
    help = "Load the demo project (handwritten digits with a logistic regression's predictions)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--force", action="store_true", help="allow demo logins with DEBUG off")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG and not options["force"]:
            raise CommandError("the demo has well-known passwords: load it only with DEBUG=1")
        spec = parse_spec(self.read_json(str(DEMO_DIR / "project.json")))
        if Project.objects.filter(slug=spec.slug).exists():
            self.stdout.write(f"demo project {spec.slug} is already loaded")
        else:
            self._load(spec)
        self._logins(spec.slug)

    @transaction.atomic
    def _load(self, spec: Any) -> None:
        project, _ = project_create_or_update(spec=spec)
        with open(DEMO_DIR / "predictions.jsonl", "rb") as stream:
            imported = predictions_import(project=project, stream=stream, fmt="jsonl")
        with open(DEMO_DIR / "gold.jsonl", "rb") as stream:
            gold = gold_import(project=project, stream=stream, fmt="jsonl")
        policy = parse_policy(self.read_json(str(DEMO_DIR / "policy.json")))
        queued = queue_select(project=project, policy=policy)
        with open(DEMO_DIR / "crowd_labels.jsonl", "rb") as stream:
            crowd = labels_import(project=project, stream=stream, fmt="jsonl")
        report = consensus_compute(project=project)
        flagged = [name for name, figures in report.labellers.items() if figures["flags"]]
        self.stdout.write(
            f"loaded demo project {project.slug}: {imported.new_items} items, "
            f"{gold.marked} gold answers, {queued.queued} queued for labelling, "
            f"{crowd.new_labels} crowd labels from {crowd.new_labellers} labellers "
            f"({', '.join(flagged) or 'none'} flagged)"
        )

    def _logins(self, slug: str) -> None:
        project = Project.objects.get(slug=slug)
        for username, role in DEMO_USERS.items():
            labeller_create(project=project, username=username, role=role)
            user = get_user_model().objects.get(username=username)
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
            self.stdout.write(f"  demo login: {username} / {DEMO_PASSWORD} ({role.label.lower()})")
