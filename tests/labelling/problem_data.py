"""A project with two model versions and two problems whose figures are worked by hand.

Problem "doctor matched to dealer" (harm 2): patterns d0–d3; "vet visits" (harm 1): v0, v1.

| item | gold     | m1 p(match) | m2 p(match) |
|------|----------|-------------|-------------|
| d0   | match    | 0.8 right   | 0.3 FN      |
| d1   | no_match | 0.7 FP      | 0.2 right   |
| d2   | no_match | 0.9 FP      | 0.1 right   |
| d3   | match    | 0.6 right   | 0.7 right   |
| v0   | match    | 0.9 right   | 0.2 FN      |
| v1   | no_match | 0.1 right   | 0.8 FP      |

So m1 errs 2/4 on doctors and 0/2 on vets; m2 1/4 and 2/2. Priorities (latest version, m2):
doctors 0.25 × 2 = 0.5, vets 1.0 × 1 = 1.0: vets first.
"""

from __future__ import annotations

import io
import json
from datetime import timedelta

from django.utils import timezone

from labelling.models import ModelVersion, Problem, Project
from labelling.services.evaluation import evaluation_compute
from labelling.services.gold import gold_import
from labelling.services.imports import predictions_import
from labelling.services.problems import ProblemChange, problem_create

GOLD = {"d0": "match", "d1": "no_match", "d2": "no_match", "d3": "match"}
GOLD |= {"v0": "match", "v1": "no_match"}
M1 = {"d0": 0.8, "d1": 0.7, "d2": 0.9, "d3": 0.6, "v0": 0.9, "v1": 0.1}
M2 = {"d0": 0.3, "d1": 0.2, "d2": 0.1, "d3": 0.7, "v0": 0.2, "v1": 0.8}
DOCTORS, VETS = "doctor matched to dealer", "vet visits"


def payload(key: str) -> dict[str, str]:
    return {"text": f"pattern {key}"}


def predict(project: Project, version: str, scores: dict[str, float], **extra: str) -> None:
    """Import one prediction per item: p(match) as given."""
    rows = "\n".join(
        json.dumps(
            {
                "external_id": key,
                "payload": payload(key),
                "model_version": version,
                "probabilities": {"match": p, "no_match": round(1 - p, 6)},
                **extra,
            }
        )
        for key, p in scores.items()
    )
    predictions_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")


def gold(project: Project, answers: dict[str, str]) -> None:
    rows = "\n".join(json.dumps({"external_id": k, "label": v}) for k, v in answers.items())
    gold_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")


def build(project: Project) -> tuple[Problem, Problem]:
    """The table above, evaluated."""
    predict(project, "m1", M1)
    predict(project, "m2", M2)
    # Import times a day apart, so that the time order is certain.
    ModelVersion.objects.filter(name="m1").update(first_seen_at=timezone.now() - timedelta(days=1))
    gold(project, GOLD)
    doctors, _ = problem_create(
        project=project,
        user=None,
        change=ProblemChange(
            name=DOCTORS, harm=2, reporter="Acme Pets", items=["d0", "d1", "d2", "d3"]
        ),
    )
    vets, _ = problem_create(
        project=project, user=None, change=ProblemChange(name=VETS, items=["v0", "v1"])
    )
    evaluation_compute(project=project)
    return doctors, vets
