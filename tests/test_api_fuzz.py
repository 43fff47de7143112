"""The REST API fuzzed from its own OpenAPI schema: no request, however odd, gets a 500, and every
answer is one the schema documents (status code, content type and body)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pytest_django import Settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from core.permissions import Role
from core.wsgi import application
from labelling.models import Escalation, Job, Labeller, Project
from labelling.policy import parse_policy
from labelling.services.consensus import consensus_compute
from labelling.services.gold import gold_import
from labelling.services.imports import predictions_import
from labelling.services.jobs import job_release_start
from labelling.services.labellers import labeller_create
from labelling.services.labels import labels_import
from labelling.services.leasing import lease_next
from labelling.services.problems import ProblemChange, problem_create
from labelling.services.queueing import queue_select
from labelling.services.releases import ReleaseRequest, release_create

SLUG = "fuzzed"
# The operations a crowd labeller calls; the rest need an expert or an engineer.
CROWD_OPERATIONS = r"^/api/v1/(projects/\{slug\}/tasks/next|leases/)"


@dataclass(frozen=True)
class World:
    """A populated project and who may call its API."""

    project: Project
    engineer_token: str
    crowd_token: str
    ids: dict[str, list[Any]]


def _jsonl(rows: list[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO("\n".join(json.dumps(row) for row in rows).encode())


def _predictions(project: Project, version: str, shift: float) -> None:
    rows = [
        {
            "external_id": f"i{n}",
            "payload": {"text": f"item {n}"},
            "model_version": version,
            "probabilities": {"match": round(p, 3), "no_match": round(1 - p, 3)},
            "split": "test" if n % 4 == 0 else "train",
        }
        for n, p in enumerate(min(0.99, 0.1 + 0.07 * n + shift) for n in range(12))
    ]
    predictions_import(project=project, stream=_jsonl(rows), fmt="jsonl")


def _crowd_labels(project: Project) -> None:
    answers = {"i0": ["match", "no_match"], "i1": ["match", "no_match"]}
    answers |= {f"i{n}": ["match", "match"] for n in range(2, 6)}
    rows = [
        {"external_id": key, "labeller": f"w{i}", "label": label}
        for key, labels in answers.items()
        for i, label in enumerate(labels)
    ]
    labels_import(project=project, stream=_jsonl(rows), fmt="jsonl")


def build_world(make_project: Callable[..., Project]) -> World:
    """Items with predictions of two model versions, gold answers, a queue, crowd labels with
    escalations and approvals, an open lease, a problem, a release and a job."""
    project = make_project(
        slug=SLUG,
        overlap={"min": 2, "max": 2, "target_confidence": 0.95},
        escalation={"below_confidence": 0.9, "audit_fraction": 0},
        gold_rate=0,
    )
    _predictions(project, "m1", 0.0)
    _predictions(project, "m2", 0.05)
    gold_import(
        project=project,
        stream=_jsonl([{"external_id": "i8", "label": "match"}]),
        fmt="jsonl",
    )
    queue_select(
        project=project, policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]})
    )
    _crowd_labels(project)
    consensus_compute(project=project)
    engineer, engineer_token = labeller_create(
        project=project, username="fuzz-engineer", role=Role.ENGINEER
    )
    crowd, crowd_token = labeller_create(project=project, username="fuzz-crowd", role=Role.CROWD)
    lease = lease_next(project=project, labeller=crowd)
    problem, _ = problem_create(
        project=project,
        user=engineer.user,
        change=ProblemChange(name="dealers", harm=2, items=["i2", "i3"]),
    )
    release = release_create(
        project=project, user=engineer.user, request=ReleaseRequest(override_reason="fuzzing")
    )
    job = job_release_start(
        project=project, user=engineer.user, params=ReleaseRequest().as_params()
    )
    ids = {
        "slug": [SLUG],
        "lease_id": [lease.pk] if lease else [],
        "labeller_id": list(Labeller.objects.filter(project=project).values_list("pk", flat=True)),
        "escalation_id": list(
            Escalation.objects.filter(item__project=project).values_list("pk", flat=True)
        ),
        "problem_id": [problem.pk],
        "release_id": [release.pk],
        "job_id": [job.pk, *Job.objects.filter(project=project).values_list("pk", flat=True)],
        "name": ["m1", "m2"],
    }
    return World(project, engineer_token, crowd_token, ids)


@pytest.fixture
def world(
    make_project: Callable[..., Project], settings: Settings, tmp_path: Path
) -> Iterator[World]:
    settings.EXPORT_STORAGE = (tmp_path / "exports").as_uri()
    # Requests go to the WSGI app itself, whose end-of-request signal closes the connection (and
    # with it the test's transaction on PostgreSQL); Django's test client unhooks it the same way.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield build_world(make_project)
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


# Loaded once, at collection, from the app itself (no server): what clients are told.
schema = schemathesis.openapi.from_wsgi(
    "/api/schema/", application, headers={"Accept": "application/json"}
)
# What the API promises: no server error, only documented statuses, content types, headers and
# bodies, no answer without a token, 405 for a method it lacks. (Left out: Schemathesis' guesses
# that every schema-valid request succeeds and every other fails; a label outside the project's
# label set is valid to the schema and rightly refused, and "5" is rightly read as 5.)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    ignored_auth,
    unsupported_method,
]
# A third of the profile's examples for each of the API's two dozen operations keeps the run in
# CI to about half a minute; HYPOTHESIS_PROFILE=deep explores far more.
FUZZ = hypothesis_settings(max_examples=max(10, hypothesis_settings().max_examples // 3))


def aim(case: Any, world: World, data: st.DataObject) -> None:
    """Point some requests at the world's real objects and labels: random ids and labels only
    ever meet a 404 or a 400, and the code behind them would go untried."""
    for name, value in list((case.path_parameters or {}).items()):
        case.path_parameters[name] = data.draw(st.sampled_from([value, *world.ids.get(name, [])]))
    if isinstance(case.body, dict) and "label" in case.body:
        labels = world.project.labels
        case.body["label"] = data.draw(st.sampled_from([case.body["label"], *labels]))


@pytest.mark.django_db
@schema.parametrize()
@schema.given(data=st.data())
@FUZZ
def test_no_request_of_an_engineer_breaks_the_api_or_its_schema(
    case: Any, data: st.DataObject, world: World
) -> None:
    aim(case, world, data)
    case.call_and_validate(
        headers={"Authorization": f"Token {world.engineer_token}"}, checks=CHECKS
    )


@pytest.mark.django_db
@schema.include(path_regex=CROWD_OPERATIONS).parametrize()
@schema.given(data=st.data())
@FUZZ
def test_no_request_of_a_crowd_labeller_breaks_the_api_or_its_schema(
    case: Any, data: st.DataObject, world: World
) -> None:
    aim(case, world, data)
    case.call_and_validate(headers={"Authorization": f"Token {world.crowd_token}"}, checks=CHECKS)
