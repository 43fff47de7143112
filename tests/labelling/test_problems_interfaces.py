"""The problems CLI a model's CI runs, the API and its roles, the page, prediction monitoring."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from core.permissions import Role
from labelling.models import Item, ModelVersion, Prediction, Problem, Project, QueueEntry
from labelling.problems import prediction_monitoring
from labelling.services.labellers import labeller_create
from tests.labelling.problem_data import DOCTORS, VETS, build, predict

pytestmark = pytest.mark.usefixtures("eager_jobs")
URL = "/api/v1/projects/pet-match/problems"


@pytest.fixture
def built(project: Project) -> Project:
    build(project)
    return project


def run(*args: str) -> tuple[dict[str, Any], int]:
    """Run `problems --json …`; return the JSON printed and the exit status."""
    out = io.StringIO()
    try:
        call_command("problems", "pet-match", "--json", *args, stdout=out)
        status = 0
    except CommandError as exc:
        status = exc.returncode
    return json.loads(out.getvalue()), status


def test_the_json_a_ci_reads(built: Project) -> None:
    report, status = run()
    assert status == 0
    assert set(report) == {
        "project", "threshold", "positive_label", "computed_at", "model_versions", "problems",
        "test_split",
    }  # fmt: skip
    assert [p["name"] for p in report["problems"]] == [VETS, DOCTORS]
    vets = report["problems"][0]
    assert set(vets) == {
        "id",
        "name",
        "description",
        "status",
        "harm",
        "reporter",
        "priority",
        "n_items",
        "figures",
    }
    assert vets["figures"]["m2"]["error_rate"] == 1.0 and vets["n_items"] == 2
    assert [v["name"] for v in report["model_versions"]] == ["m1", "m2"]


def test_a_candidate_worse_on_a_harmful_enough_problem_fails_the_build(built: Project) -> None:
    report, status = run("--fail-if-worse", "m2", "--than", "m1", "--min-harm", "1")
    assert status == 3
    comparison = report["comparison"]
    assert comparison["passed"] is False
    assert [row["problem"] for row in comparison["worse"]] == [VETS]
    assert comparison["worse"][0]["candidate_error_rate"] == 1.0


def test_problems_below_the_harm_bar_do_not_fail_the_build(built: Project) -> None:
    report, status = run("--fail-if-worse", "m2", "--than", "m1", "--min-harm", "1.5")
    assert (status, report["comparison"]["passed"]) == (0, True)
    # The other way round, m1 is worse than m2 on the doctors (0.5 against 0.25), harm 2.
    report, status = run("--fail-if-worse", "m1", "--than", "m2", "--min-harm", "2")
    assert status == 3
    assert [row["problem"] for row in report["comparison"]["worse"]] == [DOCTORS]


def test_a_candidate_not_evaluated_on_a_problem_fails_too(built: Project) -> None:
    predict(built, "m3", {"d0": 0.9})  # no vet patterns
    report, status = run("--fail-if-worse", "m3", "--than", "m1")
    assert status == 3
    assert [row["problem"] for row in report["comparison"]["missing"]] == [VETS]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fail-if-worse", "m9", "--than", "m1"], "no model version 'm9'"),
        (["--fail-if-worse", "m2"], "go together"),
        (["--fail-if-worse", "m2", "--than", "m1", "--min-harm", "lots"], "min_harm"),
        (["--fail-if-worse", "m2", "--than", "m1", "--min-harm", "-1"], "min_harm"),
    ],
)
def test_bad_arguments_exit_with_1_and_name_the_problem(
    built: Project, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError) as caught:
        call_command("problems", "pet-match", *args, stdout=io.StringIO())
    assert caught.value.returncode == 1
    assert message in str(caught.value)


def test_an_unknown_project_is_named(db: None) -> None:
    with pytest.raises(CommandError, match="no project with slug 'nope'"):
        call_command("problems", "nope")


def test_the_text_listing(built: Project) -> None:
    out = io.StringIO()
    call_command("problems", "pet-match", stdout=out)
    assert "vet visits (harm 1, open, priority 1.000)" in out.getvalue()
    assert "m2: 0.250 (1/4)" in out.getvalue()


def test_api_roles(built: Project, client_for: Callable[..., APIClient]) -> None:
    engineer = client_for(built, "erin", Role.ENGINEER)
    expert = client_for(built, "ezra", Role.EXPERT)
    crowd = client_for(built, "cora", Role.CROWD)
    other = make_stranger(client_for)
    assert engineer.get(URL).status_code == 200
    assert expert.get(URL).json()["problems"][0]["name"] == VETS
    assert crowd.get(URL).status_code == 403
    assert other.get(URL).status_code == 404
    assert crowd.post(URL, {"name": "x"}, format="json").status_code == 403
    problem = Problem.objects.get(name=VETS)
    assert crowd.patch(f"/api/v1/problems/{problem.pk}", {}, format="json").status_code == 403
    assert other.patch(f"/api/v1/problems/{problem.pk}", {}, format="json").status_code == 404
    version = "/api/v1/projects/pet-match/model-versions/m2"
    assert expert.patch(version, {"note": "x"}, format="json").status_code == 403
    assert crowd.get(f"{version}/monitoring").status_code == 403


def make_stranger(client_for: Callable[..., APIClient]) -> APIClient:
    from labelling.services.projects import project_create_or_update
    from labelling.spec import parse_spec

    elsewhere, _ = project_create_or_update(
        spec=parse_spec({"slug": "other", "labels": ["a", "b"]})
    )
    return client_for(elsewhere, "olga", Role.ENGINEER)


def test_api_comparison(built: Project, engineer_api: APIClient) -> None:
    body = engineer_api.get(URL, {"candidate": "m2", "deployed": "m1", "min_harm": 1}).json()
    assert body["comparison"]["passed"] is False
    assert body["problems"][0]["figures"]["m2"] == {
        "n": 2, "positives": 1, "errors": 2, "false_positives": 1, "false_negatives": 1,
        "error_rate": 1.0, "auc": 0.0,
    }  # fmt: skip
    # The API and the CLI give the same report (the CLI evaluates afresh: a later time).
    cli = run("--fail-if-worse", "m2", "--than", "m1", "--min-harm", "1")[0]
    assert {**body, "computed_at": None} == {**cli, "computed_at": None}
    bad = engineer_api.get(URL, {"candidate": "m9", "deployed": "m1"})
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "candidate"
    assert engineer_api.get(URL, {"candidate": "m2"}).status_code == 400


def test_an_expert_creates_a_problem_with_new_patterns_through_the_api(
    built: Project, expert_api: APIClient
) -> None:
    response = expert_api.post(
        URL,
        {
            "name": "groomers as vets", "description": "Groomers matched to vet visits",
            "harm": 3, "reporter": "support", "items": ["v0"],
            "patterns": [{"external_id": "g1", "payload": {"text": "dog groomer"}}],
        },
        format="json",
    )  # fmt: skip
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["queued"], body["problem"]["n_items"], body["problem"]["harm"]) == (1, 2, 3.0)
    assert QueueEntry.objects.get(item__external_id="g1").rule == "problem"
    problem_id = body["problem"]["id"]
    changed = expert_api.patch(
        f"/api/v1/problems/{problem_id}",
        {"status": "fixed", "remove_items": ["v0"]},
        format="json",
    )
    assert changed.status_code == 200
    assert (changed.json()["problem"]["status"], changed.json()["problem"]["n_items"]) == (
        "fixed",
        1,
    )


def test_bad_api_input_is_refused_whole(built: Project, engineer_api: APIClient) -> None:
    items = Item.objects.count()
    response = engineer_api.post(
        URL,
        {"name": "x", "harm": 5000, "patterns": [{"external_id": "n1", "payload": {"t": 1}}],
         "items": ["ghost"]},
        format="json",
    )  # fmt: skip
    assert response.status_code == 400
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"harm"}
    response = engineer_api.post(
        URL,
        {"name": "x", "patterns": [{"external_id": "n1", "payload": {"t": 1}}], "items": ["ghost"]},
        format="json",
    )
    assert {e["field"] for e in response.json()["errors"]} == {"items"}
    assert Item.objects.count() == items and not Problem.objects.filter(name="x").exists()


def test_an_engineer_describes_a_candidate_model(built: Project, engineer_api: APIClient) -> None:
    url = "/api/v1/projects/pet-match/model-versions/m2"
    response = engineer_api.patch(
        url, {"note": "more vets", "link": "s3://runs/42", "git_hash": "ab12cd"}, format="json"
    )
    assert response.status_code == 200
    assert ModelVersion.objects.get(name="m2").git_hash == "ab12cd"
    assert engineer_api.patch(url, {"git_hash": "not-hex"}, format="json").status_code == 400
    assert engineer_api.patch(url + "x", {"note": ""}, format="json").status_code == 404


def _page_user(project: Project, name: str, role: Role) -> Client:
    labeller, _ = labeller_create(project=project, username=name, role=role)
    client = Client()
    client.force_login(labeller.user)
    return client


def test_the_page_for_experts_and_crowd(built: Project) -> None:
    page = "/projects/pet-match/problems/"
    assert _page_user(built, "cora", Role.CROWD).get(page).status_code == 403
    expert = _page_user(built, "ezra", Role.EXPERT)
    vets = Problem.objects.get(name=VETS)
    html = expert.get(f"{page}?problem={vets.pk}").content.decode()
    assert 'id="error-chart"' in html and html.count('class="problem-line"') == 2
    assert "pattern v0" in html and "✗" in html
    response = expert.post(
        page,
        {"action": "create", "name": "pet sitters", "harm": "2", "status": "open",
         "patterns": '{"external_id": "s1", "payload": {"text": "sitter"}}'},
    )  # fmt: skip
    assert response.status_code == 302
    assert Problem.objects.get(name="pet sitters").items.get().external_id == "s1"
    sitters = Problem.objects.get(name="pet sitters")
    edited = expert.post(
        page,
        {"action": "update", "problem": sitters.pk, "name": "pet sitters", "harm": "3",
         "status": "fixed", "description": "", "reporter": "", "items": "v0", "remove_items": "s1"},
    )  # fmt: skip
    assert edited.status_code == 302
    sitters.refresh_from_db()
    assert (sitters.harm, sitters.status) == (3, "fixed")
    assert [i.external_id for i in sitters.items.all()] == ["v0"]
    bad = expert.post(page, {"action": "create", "name": "", "patterns": "{oops"}, follow=True)
    assert "Nothing saved" in bad.content.decode()
    # Describing model versions is for engineers.
    refused = expert.post(page, {"action": "describe_version", "name": "m1", "note": "n"})
    assert refused.status_code == 403


def test_monitoring_flags_a_day_that_moved_from_the_training_distribution(
    project: Project, settings: Any
) -> None:
    settings.DRIFT_MAX_SHIFT = 0.2
    predict(project, "m1", {f"t{i}": (0.9 if i < 5 else 0.1) for i in range(10)}, split="train")
    predict(project, "m1", {f"a{i}": (0.8 if i < 6 else 0.3) for i in range(10)})
    predict(project, "m1", {f"b{i}": (0.8 if i < 9 else 0.3) for i in range(10)})
    now = timezone.now()
    for prefix, days in (("t", 3), ("a", 2)):
        Prediction.objects.filter(item__external_id__startswith=prefix).update(
            created_at=now - timedelta(days=days)
        )
    report = prediction_monitoring(project, "m1")
    assert report["reference"] == 'split "train"'
    assert report["reference_classes"] == {"match": 0.5, "no_match": 0.5}
    shifts = [(d["n"], d["shift"], d["flagged"]) for d in report["days"]]
    assert shifts == [(10, 0.0, False), (10, 0.1, False), (10, 0.4, True)]
    assert report["flagged_today"] is True
    assert report["days"][0]["mean_confidence"] == 0.9
    # Day a: top confidence 0.8 six times and 0.7 four times.
    assert report["days"][1]["mean_confidence"] == pytest.approx(0.76)
    assert report["days"][1]["std_confidence"] == pytest.approx(0.049, abs=1e-3)


def test_monitoring_falls_back_to_the_earliest_day(project: Project) -> None:
    predict(project, "m1", {"a0": 0.9, "a1": 0.2})
    Prediction.objects.update(created_at=timezone.now() - timedelta(days=1))
    predict(project, "m1", {"b0": 0.9})
    report = prediction_monitoring(project, "m1")
    assert report["reference"].startswith("earliest day")
    assert [d["shift"] for d in report["days"]] == [0.0, 0.5]
