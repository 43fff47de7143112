"""POST /api/v1/projects/{slug}/predictions and GET /api/v1/jobs/{id}: imports, jobs and roles."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.response import Response
from rest_framework.test import APIClient

from core.permissions import Role
from labelling.models import Item, Job, Labeller, Prediction, Project

Row = dict[str, Any]
MakeClient = Callable[[Project, str, Role], APIClient]


def url(slug: str = "pet-match") -> str:
    return f"/api/v1/projects/{slug}/predictions"


def job_url(job_id: int) -> str:
    return f"/api/v1/jobs/{job_id}"


def row(external_id: str | int, match: float = 0.62, **fields: Any) -> Row:
    """A valid prediction row of the binary match/no_match project."""
    base: Row = {
        "external_id": external_id,
        "payload": {"pet": f"pet of {external_id}", "service": "dog walking"},
        "model_version": "m3",
        "probabilities": {"match": match, "no_match": round(1 - match, 10)},
    }
    return {**base, **fields}


ROWS = [row("a1", 0.62), row("a2", 0.97, source="production", split="train"), row("a3", 0.08)]


def jsonl(rows: list[Row]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def upload(client: APIClient, name: str, content: bytes, **form: str) -> Response:
    """Send a prediction file as multipart form data."""
    data: dict[str, Any] = {"file": SimpleUploadedFile(name, content), **form}
    return client.post(url(), data, format="multipart")


def counts() -> tuple[int, int]:
    return Item.objects.count(), Prediction.objects.count()


@pytest.fixture
def small_sync_limit(settings: Settings, tmp_path: Path, eager_jobs: None) -> Path:
    """Make every upload a background job; return the folder where uploads wait."""
    settings.SYNC_IMPORT_MAX_BYTES = 10
    settings.UPLOAD_DIR = tmp_path / "uploads"
    return settings.UPLOAD_DIR


# Importing a JSON list


def test_an_engineer_imports_a_json_list_of_predictions(
    engineer_api: APIClient, project: Project
) -> None:
    response = engineer_api.post(url(), ROWS, format="json")

    assert response.status_code == 201, response.data
    assert response.data == {"rows": 3, "new_items": 3, "new_predictions": 3, "unchanged": 0}
    a2 = Item.objects.get(project=project, external_id="a2")
    assert a2.payload == {"pet": "pet of a2", "service": "dog walking"}
    assert (a2.source, a2.split) == ("production", "train")
    prediction = Prediction.objects.get(item=a2)
    assert prediction.model_version == "m3"
    assert prediction.probabilities == [0.97, 0.03]
    assert prediction.predicted_label == "match"
    assert prediction.confidence == pytest.approx(0.97)


def test_importing_the_same_list_again_changes_nothing(engineer_api: APIClient) -> None:
    engineer_api.post(url(), ROWS, format="json")

    again = engineer_api.post(url(), ROWS, format="json")

    assert again.status_code == 201, again.data
    assert again.data == {"rows": 3, "new_items": 0, "new_predictions": 0, "unchanged": 3}
    assert counts() == (3, 3)


def test_a_new_model_version_adds_predictions_to_the_existing_items(
    engineer_api: APIClient,
) -> None:
    engineer_api.post(url(), ROWS, format="json")
    newer = [{**r, "model_version": "m4"} for r in ROWS]

    response = engineer_api.post(url(), newer, format="json")

    assert response.data == {"rows": 3, "new_items": 0, "new_predictions": 3, "unchanged": 0}
    assert counts() == (3, 6)


def test_rows_with_samples_and_integer_ids_are_accepted(engineer_api: APIClient) -> None:
    rows = [row(7, 0.5, samples=[[0.7, 0.3], [0.3, 0.7]])]

    response = engineer_api.post(url(), rows, format="json")

    assert response.status_code == 201, response.data
    assert Prediction.objects.get(item__external_id="7").samples == [[0.7, 0.3], [0.3, 0.7]]


# Uploading files


def test_an_engineer_uploads_a_jsonl_file(engineer_api: APIClient) -> None:
    response = upload(engineer_api, "predictions.jsonl", jsonl(ROWS))

    assert response.status_code == 201, response.data
    assert response.data == {"rows": 3, "new_items": 3, "new_predictions": 3, "unchanged": 0}
    assert counts() == (3, 3)


def test_an_engineer_uploads_a_csv_file_whose_other_columns_become_the_payload(
    engineer_api: APIClient, project: Project
) -> None:
    csv = (
        b"external_id,model_version,source,split,p:match,p:no_match,pet,service\n"
        b'b1,m3,production,train,0.45,0.55,"Anxious greyhound, hates dogs",Group dog walking\n'
        b"b2,m3,production,test,0.88,0.12,Goldfish,Pet sitter\n"
    )

    response = upload(engineer_api, "predictions.csv", csv)

    assert response.status_code == 201, response.data
    assert response.data == {"rows": 2, "new_items": 2, "new_predictions": 2, "unchanged": 0}
    b1 = Item.objects.get(project=project, external_id="b1")
    assert b1.payload == {"pet": "Anxious greyhound, hates dogs", "service": "Group dog walking"}
    assert (b1.source, b1.split) == ("production", "train")
    assert Prediction.objects.get(item=b1).probabilities == [0.45, 0.55]


def test_the_format_field_overrides_the_file_extension(engineer_api: APIClient) -> None:
    response = upload(engineer_api, "predictions.txt", jsonl(ROWS), format="jsonl")

    assert response.status_code == 201, response.data
    assert counts() == (3, 3)


def test_the_format_field_wins_over_a_misleading_extension(engineer_api: APIClient) -> None:
    csv = b"external_id,model_version,p:match,p:no_match\nc1,m3,0.3,0.7\n"

    response = upload(engineer_api, "predictions.jsonl", csv, format="csv")

    assert response.status_code == 201, response.data
    assert Item.objects.get().external_id == "c1"


def test_a_file_with_an_unknown_extension_and_no_format_is_refused_naming_the_problem(
    engineer_api: APIClient,
) -> None:
    response = upload(engineer_api, "predictions.txt", jsonl(ROWS))

    assert response.status_code == 400
    assert "predictions.txt" in response.data["detail"]
    assert ".jsonl or .csv" in response.data["detail"]
    assert counts() == (0, 0)


def test_an_unknown_format_value_is_refused(engineer_api: APIClient) -> None:
    response = upload(engineer_api, "predictions.jsonl", jsonl(ROWS), format="xml")

    assert response.status_code == 400
    assert counts() == (0, 0)


def test_an_unknown_format_value_is_refused_naming_the_format(engineer_api: APIClient) -> None:
    response = upload(engineer_api, "predictions.jsonl", jsonl(ROWS), format="xml")

    assert "format" in str(response.data)


def test_a_multipart_form_without_a_file_is_refused(engineer_api: APIClient) -> None:
    response = engineer_api.post(url(), {"format": "jsonl"}, format="multipart")

    assert response.status_code == 400
    assert "file" in response.data["detail"]


def test_a_json_object_instead_of_a_list_is_refused(engineer_api: APIClient) -> None:
    response = engineer_api.post(url(), ROWS[0], format="json")

    assert response.status_code == 400
    assert "JSON list" in response.data["detail"]
    assert counts() == (0, 0)


def test_an_empty_list_is_refused(engineer_api: APIClient) -> None:
    response = engineer_api.post(url(), [], format="json")

    assert response.status_code == 400
    assert "no prediction rows" in response.data["detail"]


# Invalid rows


def test_invalid_rows_are_refused_with_every_error_and_nothing_is_written(
    engineer_api: APIClient,
) -> None:
    rows = [
        row("a1"),
        row("a2", probabilities={"match": 0.7, "no_match": 0.7}),
        {k: v for k, v in row("a3").items() if k != "model_version"},
        row("a4", probabilities={"match": 0.5, "maybe": 0.5}),
    ]

    response = engineer_api.post(url(), rows, format="json")

    assert response.status_code == 400
    assert response.data["code"] == "invalid_input"
    errors = response.data["errors"]
    assert all(set(e) == {"line", "field", "reason"} for e in errors)
    where = {(e["line"], e["field"]) for e in errors}
    assert (2, "probabilities") in where
    assert (3, "model_version") in where
    assert (4, "probabilities.maybe") in where
    assert (4, "probabilities.no_match") in where
    assert 1 not in {e["line"] for e in errors}
    assert response.data["total_errors"] == len(errors)
    assert counts() == (0, 0)


def test_an_invalid_csv_names_its_lines_counting_the_header_as_line_one(
    engineer_api: APIClient,
) -> None:
    csv = b"external_id,model_version,p:match,p:no_match\nc1,m3,0.3,0.7\nc2,m3,lots,0.7\n"

    response = upload(engineer_api, "predictions.csv", csv)

    assert response.status_code == 400
    assert response.data["errors"] == [
        {"line": 3, "field": "p:match", "reason": "must be a number, got 'lots'"}
    ]
    assert counts() == (0, 0)


def test_a_csv_without_a_probability_column_is_refused_at_its_header(
    engineer_api: APIClient,
) -> None:
    csv = b"external_id,model_version,p:match\nc1,m3,0.3\n"

    response = upload(engineer_api, "predictions.csv", csv)

    assert response.status_code == 400
    assert {(e["line"], e["field"]) for e in response.data["errors"]} == {(1, "p:no_match")}


def test_a_row_that_contradicts_a_stored_prediction_is_refused_and_nothing_is_written(
    engineer_api: APIClient,
) -> None:
    engineer_api.post(url(), [row("a1", 0.6)], format="json")

    response = engineer_api.post(url(), [row("a2"), row("a1", 0.9)], format="json")

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.data["errors"]] == [(2, "probabilities")]
    assert counts() == (1, 1)


def test_rows_of_one_file_that_contradict_each_other_are_refused(engineer_api: APIClient) -> None:
    rows = [row("a1", 0.6), row("a2"), row("a1", 0.6, payload={"pet": "another pet"})]

    response = engineer_api.post(url(), rows, format="json")

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.data["errors"]] == [(3, "payload")]
    assert counts() == (0, 0)


def test_a_malformed_jsonl_line_is_named(engineer_api: APIClient) -> None:
    content = jsonl(ROWS[:1]) + b'{"external_id": "a2",\n'

    response = upload(engineer_api, "predictions.jsonl", content)

    assert response.status_code == 400
    [error] = response.data["errors"]
    assert error["line"] == 2
    assert error["reason"].startswith("malformed JSON")


@pytest.mark.parametrize(
    "extra", [{}, {"samples": [[0.6, 0.4]]}], ids=["fast path", "with samples"]
)
@pytest.mark.parametrize("source", [0, False, [], {}])
def test_a_row_whose_source_is_not_a_string_is_refused(
    engineer_api: APIClient, source: object, extra: Row
) -> None:
    response = engineer_api.post(url(), [row("a1", source=source, **extra)], format="json")

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.data["errors"]] == [(1, "source")]
    assert counts() == (0, 0)


def with_lone_surrogate(field: str) -> bytes:
    """A JSON Lines row whose `field` holds the escape of a lone surrogate (U+D800)."""
    line = jsonl([row("a2", source="production", split="train")])
    old = {
        "payload": b"pet of a2",
        "external_id": b'"a2"',
        "model_version": b'"m3"',
        "source": b"production",
        "split": b"train",
    }[field]
    new = old[:-1] + b'\\ud800"' if old.endswith(b'"') else old + b"\\ud800"
    return line.replace(old, new)


def test_a_lone_surrogate_in_a_payload_is_refused_naming_its_line(
    engineer_api: APIClient,
) -> None:
    content = jsonl(ROWS[:1]) + with_lone_surrogate("payload")

    response = upload(engineer_api, "predictions.jsonl", content)

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.data["errors"]] == [(2, "payload")]
    assert counts() == (0, 0)


def test_a_json_list_with_a_lone_surrogate_is_refused_naming_its_line(
    engineer_api: APIClient,
) -> None:
    body = b"[" + jsonl(ROWS[:1]).strip() + b"," + with_lone_surrogate("payload").strip() + b"]"

    response = engineer_api.post(url(), body, content_type="application/json")

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.data["errors"]] == [(2, "payload")]


@pytest.mark.parametrize("field", ["external_id", "model_version", "source", "split"])
def test_a_lone_surrogate_in_any_text_field_is_refused_naming_its_line(
    engineer_api: APIClient, field: str
) -> None:
    engineer_api.raise_request_exception = False

    response = upload(engineer_api, "predictions.jsonl", with_lone_surrogate(field))

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.data["errors"]] == [(1, field)]
    assert counts() == (0, 0)


@pytest.mark.parametrize("field", ["payload", "external_id"])
def test_a_nul_character_is_refused_naming_its_line(engineer_api: APIClient, field: str) -> None:
    # PostgreSQL's text and jsonb cannot hold U+0000, so it is refused on every database.
    bad = row("a2", payload={"pet": "a\u0000b"})
    if field == "external_id":
        bad = row("a\u0000b", payload={"pet": "dog"})

    response = engineer_api.post(url(), [row("a1"), bad], format="json")

    assert response.status_code == 400
    assert [(e["line"], e["field"]) for e in response.data["errors"]] == [(2, field)]
    assert counts() == (0, 0)


# Large uploads: background jobs


@pytest.mark.django_db(transaction=True)
def test_a_large_upload_becomes_a_job_that_has_finished_when_jobs_run_in_process(
    engineer_api: APIClient, small_sync_limit: Path
) -> None:
    response = upload(engineer_api, "predictions.jsonl", jsonl(ROWS))

    assert response.status_code == 202, response.data
    body = response.data
    assert body["url"] == job_url(body["id"])
    assert body["kind"] == "import_predictions"
    assert body["project"] == "pet-match"
    # The job was sent on commit, inside the request, and ran at once.
    assert body["status"] == "succeeded"
    assert body["progress"] == 1.0
    assert counts() == (3, 3)


def test_a_finished_import_job_reports_its_counts(
    engineer_api: APIClient,
    small_sync_limit: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(engineer_api, "predictions.jsonl", jsonl(ROWS))
    assert response.status_code == 202
    assert set(response.data) >= {"id", "status", "progress", "url"}

    job = engineer_api.get(response.data["url"])

    assert job.status_code == 200
    assert job.data["id"] == response.data["id"]
    assert job.data["status"] == "succeeded"
    assert job.data["progress"] == 1.0
    assert job.data["result"] == {"rows": 3, "new_items": 3, "new_predictions": 3, "unchanged": 0}
    assert job.data["error"] is None
    assert job.data["started_at"] and job.data["finished_at"]
    assert counts() == (3, 3)


def test_a_job_is_queued_until_the_request_commits(
    engineer_api: APIClient,
    small_sync_limit: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = upload(engineer_api, "predictions.jsonl", jsonl(ROWS))

    assert response.data["status"] == "queued"
    assert response.data["progress"] == 0.0
    assert len(callbacks) == 1
    assert counts() == (0, 0)


def test_a_large_json_list_also_runs_as_a_job(
    engineer_api: APIClient,
    small_sync_limit: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = engineer_api.post(url(), ROWS, format="json")

    assert response.status_code == 202
    assert Job.objects.get(pk=response.data["id"]).status == Job.Status.SUCCEEDED
    assert counts() == (3, 3)


def test_a_large_csv_upload_runs_as_a_job(
    engineer_api: APIClient,
    small_sync_limit: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    csv = b"external_id,model_version,p:match,p:no_match,text\nc1,m3,0.3,0.7,hello\n"
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(engineer_api, "predictions.csv", csv)

    job = Job.objects.get(pk=response.data["id"])
    assert job.status == Job.Status.SUCCEEDED, job.error
    assert Item.objects.get().payload == {"text": "hello"}


def test_a_large_invalid_file_ends_its_job_failed_naming_the_lines_and_writes_nothing(
    engineer_api: APIClient,
    small_sync_limit: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    rows = [row("a1"), row("a2", match=1.5), row("a3"), {"external_id": "a4"}]
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(engineer_api, "predictions.jsonl", jsonl(rows))
    assert response.status_code == 202

    job = engineer_api.get(job_url(response.data["id"]))

    assert job.status_code == 200
    assert job.data["status"] == "failed"
    assert job.data["result"] is None
    assert job.data["error"]["code"] == "invalid_input"
    lines = {e["line"] for e in job.data["error"]["errors"]}
    assert lines == {2, 4}
    assert all(set(e) == {"line", "field", "reason"} for e in job.data["error"]["errors"])
    assert counts() == (0, 0)


def test_a_job_removes_its_uploaded_file_when_it_is_done(
    engineer_api: APIClient,
    small_sync_limit: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        upload(engineer_api, "good.jsonl", jsonl(ROWS))
        upload(engineer_api, "bad.jsonl", b"this is not json at all\n")

    assert sorted(Job.objects.values_list("status", flat=True)) == ["failed", "succeeded"]
    assert list(small_sync_limit.iterdir()) == []


def test_a_failed_job_reports_how_far_it_got(
    engineer_api: APIClient,
    small_sync_limit: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    rows = [*ROWS, row("a4", match=1.5)]
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(engineer_api, "predictions.jsonl", jsonl(rows))

    job = engineer_api.get(job_url(response.data["id"]))

    assert job.data["status"] == "failed"
    assert 0 < job.data["progress"] < 1


def test_a_job_that_crashes_ends_failed_with_an_internal_error(
    engineer_api: APIClient,
    small_sync_limit: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(**kwargs: Any) -> None:
        raise RuntimeError("a bug in the importer")

    monkeypatch.setattr("labelling.services.jobs.predictions_import", crash)
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(engineer_api, "predictions.jsonl", jsonl(ROWS))

    job = engineer_api.get(job_url(response.data["id"]))

    assert job.data["status"] == "failed"
    assert job.data["error"]["code"] == "internal_error"
    assert "a bug in the importer" not in job.data["error"]["detail"]
    assert job.data["finished_at"] is not None
    assert counts() == (0, 0)


# Who may import, and who may see a job


def test_an_anonymous_request_is_unauthorised(project: Project) -> None:
    response = APIClient().post(url(), ROWS, format="json")

    assert response.status_code == 401
    assert counts() == (0, 0)


@pytest.mark.parametrize("role", [Role.CROWD, Role.EXPERT])
def test_a_crowd_labeller_or_an_expert_cannot_import_predictions(
    project: Project, client_for: MakeClient, role: Role
) -> None:
    client = client_for(project, "someone", role)

    response = client.post(url(), ROWS, format="json")

    assert response.status_code == 403
    assert response.data["code"] == "permission_denied"
    assert counts() == (0, 0)


def test_an_engineer_of_another_project_gets_not_found(
    make_project: Callable[..., Project], client_for: MakeClient
) -> None:
    make_project()
    other = make_project(slug="other")
    client = client_for(other, "olga-other", Role.ENGINEER)

    response = client.post(url("pet-match"), ROWS, format="json")

    assert response.status_code == 404
    assert counts() == (0, 0)


def test_a_blocked_engineer_gets_not_found(project: Project, client_for: MakeClient) -> None:
    client = client_for(project, "bea-blocked", Role.ENGINEER)
    Labeller.objects.filter(user__username="bea-blocked").update(status=Labeller.Status.BLOCKED)

    response = client.post(url(), ROWS, format="json")

    assert response.status_code == 404


def test_an_unknown_project_is_not_found(engineer_api: APIClient) -> None:
    response = engineer_api.post(url("no-such-project"), ROWS, format="json")

    assert response.status_code == 404
    assert response.data["code"] == "not_found"


def test_a_superuser_logged_in_by_session_counts_as_an_engineer(project: Project) -> None:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = APIClient()
    client.force_login(admin)

    response = client.post(url(), ROWS, format="json")

    assert response.status_code == 201, response.data
    assert counts() == (3, 3)


def test_a_session_import_without_the_csrf_token_is_refused(project: Project) -> None:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(admin)

    response = client.post(url(), ROWS, format="json")

    assert response.status_code == 403
    assert "CSRF" in response.data["detail"]
    assert counts() == (0, 0)


@pytest.fixture
def finished_job(
    engineer_api: APIClient,
    small_sync_limit: Path,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> int:
    """The id of an import job that an engineer of pet-match ran."""
    with django_capture_on_commit_callbacks(execute=True):
        response = upload(engineer_api, "predictions.jsonl", jsonl(ROWS))
    return int(response.data["id"])


def test_an_anonymous_request_for_a_job_is_unauthorised(finished_job: int) -> None:
    assert APIClient().get(job_url(finished_job)).status_code == 401


@pytest.mark.parametrize("role", [Role.CROWD, Role.EXPERT])
def test_a_crowd_labeller_or_an_expert_cannot_see_a_job(
    finished_job: int, project: Project, client_for: MakeClient, role: Role
) -> None:
    client = client_for(project, "someone", role)

    assert client.get(job_url(finished_job)).status_code == 403


def test_the_job_of_another_projects_engineer_is_not_found(
    finished_job: int, make_project: Callable[..., Project], client_for: MakeClient
) -> None:
    client = client_for(make_project(slug="other"), "olga-other", Role.ENGINEER)

    response = client.get(job_url(finished_job))

    assert response.status_code == 404
    assert response.data["code"] == "not_found"


def test_an_unknown_job_is_not_found(engineer_api: APIClient) -> None:
    response = engineer_api.get(job_url(987654))

    assert response.status_code == 404
    assert response.data["code"] == "not_found"


def test_a_superuser_sees_any_job(finished_job: int) -> None:
    admin = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123")
    client = APIClient()
    client.force_login(admin)

    response = client.get(job_url(finished_job))

    assert response.status_code == 200
    assert response.data["status"] == "succeeded"
