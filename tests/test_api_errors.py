"""The one error body of the API: what the fuzzing found, kept as plain examples."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from labelling.models import Problem, Project, QueuePolicy

pytestmark = pytest.mark.django_db


def test_a_serializer_refusal_has_the_documented_body_naming_each_field(
    project: Project, engineer_api: APIClient
) -> None:
    response = engineer_api.post(
        "/api/v1/projects/pet-match/releases",
        {"format": "xml", "override_checks": ["class_drift", "nope"]},
        format="json",
    )

    body = response.json()
    assert response.status_code == 400 and body["code"] == "invalid_input"
    assert {e["field"] for e in body["errors"]} == {"format", "override_checks[1]"}
    assert body["detail"].startswith("the request is invalid: field ")


def test_malformed_json_and_a_missing_token_have_the_documented_body(
    project: Project, engineer_api: APIClient
) -> None:
    malformed = engineer_api.post(
        "/api/v1/leases/1/label", b"\x00", content_type="application/json"
    )
    anonymous = APIClient().get("/api/v1/projects/pet-match/releases")

    assert malformed.status_code == 400 and malformed.json()["code"] == "parse_error"
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"


def test_an_unknown_api_url_answers_json_and_a_page_url_the_page(
    project: Project, engineer_api: APIClient
) -> None:
    api = engineer_api.get("/api/v1/jobs/1.5")
    page = engineer_api.get("/no/such/page/")

    assert api.status_code == 404 and api.json()["code"] == "not_found"
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")


def test_a_quoted_lone_surrogate_is_escaped_not_a_server_error(
    project: Project, engineer_api: APIClient
) -> None:
    response = engineer_api.post(
        "/api/v1/projects/pet-match/releases",
        b'{"format": "\\ud800"}',
        content_type="application/json",
    )

    assert response.status_code == 400
    assert "\\ud800" in response.json()["errors"][0]["reason"]


def test_text_the_database_cannot_keep_is_refused_by_field(
    project: Project, engineer_api: APIClient
) -> None:
    def create(problem: dict[str, object]) -> list[str]:
        response = engineer_api.post(
            "/api/v1/projects/pet-match/problems",
            json.dumps(problem),
            content_type="application/json",
        )
        assert response.status_code == 400
        return [e["field"] for e in response.json()["errors"]]

    assert create({"name": "a\u0000b"}) == ["name"]
    pattern = {"external_id": "p", "payload": {"t": "\ud800"}}
    assert create({"name": "dealers", "patterns": [pattern]}) == ["patterns[0].payload"]
    assert not Problem.objects.exists()
    version = engineer_api.get("/api/v1/projects/pet-match/model-versions/m%00/monitoring")
    assert version.status_code == 404


def test_a_budget_beyond_what_is_stored_is_refused(
    project: Project, engineer_api: APIClient
) -> None:
    response = engineer_api.post(
        "/api/v1/projects/pet-match/queue",
        {"policy": {"rules": [{"rule": "random", "fraction": 1}]}, "budget": 2**31},
        format="json",
    )

    assert response.status_code == 400 and response.json()["errors"][0]["field"] == "budget"
    assert not QueuePolicy.objects.exists()
