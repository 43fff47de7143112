"""Queueing: the policy's rules in order until the budget, stored policy versions, bad policies."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from core.exceptions import InvalidInput
from labelling.models import Project, QueueEntry, QueuePolicy
from labelling.policy import DEFAULT_POLICY, parse_policy
from labelling.services.imports import predictions_import
from labelling.services.queueing import queue_select

pytestmark = pytest.mark.django_db


def import_rows(project: Project, probs: list[float], version: str = "m1", **extra: Any) -> None:
    """One item per p(match), ids i0, i1, … in order."""
    lines = [
        json.dumps(
            {
                "external_id": f"i{n}",
                "payload": {"n": n},
                "model_version": version,
                "probabilities": {"match": p, "no_match": round(1 - p, 10)},
                **extra.get(f"i{n}", {}),
            }
        )
        for n, p in enumerate(probs)
    ]
    stream = io.BytesIO("\n".join(lines).encode())
    predictions_import(project=project, stream=stream, fmt="jsonl")


def queued(project: Project) -> list[tuple[str, str]]:
    """(external_id, rule) of the queue in priority order."""
    entries = QueueEntry.objects.filter(project=project).order_by("priority")
    return [(e.item.external_id, e.rule) for e in entries.select_related("item")]


def policy(*rules: dict[str, Any], budget: int | None = None) -> Any:
    return parse_policy({"rules": list(rules), "budget": budget})


def test_near_threshold_takes_the_items_within_the_band_closest_first(project: Project) -> None:
    import_rows(project, [0.9, 0.55, 0.48, 0.3, 0.62])

    result = queue_select(project=project, policy=policy({"rule": "near_threshold", "band": 0.1}))

    assert queued(project) == [("i2", "near_threshold"), ("i1", "near_threshold")]
    assert (result.considered, result.queued) == (5, 2)
    scores = list(QueueEntry.objects.order_by("priority").values_list("score", flat=True))
    assert scores == pytest.approx([0.02, 0.05])


def test_rules_fill_in_order_until_the_budget_is_spent(project: Project) -> None:
    import_rows(project, [0.5, 0.45, 0.7, 0.8, 0.99, 0.01])
    rules = (
        {"rule": "near_threshold", "band": 0.06},
        {"rule": "uncertain", "measure": "entropy", "top": 10},
    )

    result = queue_select(project=project, policy=policy(*rules, budget=4))

    assert queued(project) == [
        ("i0", "near_threshold"),
        ("i1", "near_threshold"),
        ("i2", "uncertain"),
        ("i3", "uncertain"),
    ]
    assert result.by_rule == [
        {"rule": "near_threshold", "queued": 2},
        {"rule": "uncertain", "queued": 2},
    ]


def test_confident_takes_only_items_above_the_confidence_bar(project: Project) -> None:
    import_rows(project, [0.99, 0.5, 0.01, 0.6, 0.985])

    queue_select(
        project=project, policy=policy({"rule": "confident", "min_confidence": 0.98, "fraction": 1})
    )

    assert sorted(queued(project)) == [
        ("i0", "confident"),
        ("i2", "confident"),
        ("i4", "confident"),
    ]


def test_random_takes_a_fraction_of_all_items(project: Project) -> None:
    import_rows(project, [i / 100 for i in range(100)])

    result = queue_select(project=project, policy=policy({"rule": "random", "fraction": 0.1}))

    assert result.queued == 10
    assert {rule for _, rule in queued(project)} == {"random"}


def test_an_item_already_queued_is_not_queued_again(project: Project) -> None:
    import_rows(project, [0.5, 0.52, 0.9])
    near = policy({"rule": "near_threshold", "band": 0.1})
    queue_select(project=project, policy=near)

    again = queue_select(project=project, policy=near)

    assert (again.considered, again.queued) == (1, 0)
    assert QueueEntry.objects.count() == 2


def test_each_entry_records_rule_score_policy_version_and_model_version(project: Project) -> None:
    import_rows(project, [0.5])

    queue_select(project=project, policy=policy({"rule": "near_threshold", "band": 0.1}))

    entry = QueueEntry.objects.get()
    assert (entry.rule, entry.score, entry.model_version) == ("near_threshold", 0.0, "m1")
    assert (entry.policy.version, entry.policy.rules) == (
        1,
        [{"rule": "near_threshold", "band": 0.1}],
    )


def test_policies_are_stored_as_versions_and_reused_when_unchanged(project: Project) -> None:
    import_rows(project, [0.5])
    first = policy({"rule": "near_threshold", "band": 0.1})

    assert queue_select(project=project, policy=first).policy_version == 1
    assert queue_select(project=project, policy=first).policy_version == 1
    assert queue_select(project=project, policy=first, budget=10).policy_version == 2
    assert queue_select(project=project).policy_version == 2
    assert QueuePolicy.objects.count() == 2


def test_without_a_policy_the_default_is_used(project: Project) -> None:
    import_rows(project, [0.5])

    result = queue_select(project=project)

    assert [r["rule"] for r in result.by_rule] == [r["rule"] for r in DEFAULT_POLICY["rules"]]
    assert QueuePolicy.objects.get().budget == DEFAULT_POLICY["budget"]


def test_the_latest_model_version_is_used_unless_one_is_named(project: Project) -> None:
    import_rows(project, [0.5, 0.9], version="old")
    import_rows(project, [0.9, 0.5], version="new")
    near = policy({"rule": "near_threshold", "band": 0.1})

    assert queue_select(project=project, policy=near, model_version="old").model_version == "old"
    assert queued(project) == [("i0", "near_threshold")]
    queue_select(project=project, policy=near)
    assert queued(project)[-1] == ("i1", "near_threshold")


def test_a_new_version_that_crosses_the_threshold_for_a_queued_item_is_reported(
    project: Project,
) -> None:
    import_rows(project, [0.55, 0.45], version="m1")
    queue_select(project=project, policy=policy({"rule": "near_threshold", "band": 0.1}))
    import_rows(project, [0.3, 0.48], version="m2")

    result = queue_select(project=project, policy=policy({"rule": "random", "fraction": 1}))

    assert result.crossed_threshold == ["i0"]


def test_mutual_information_ranks_the_items_with_disagreeing_samples(project: Project) -> None:
    samples = {
        "i0": {"samples": [[0.5, 0.5], [0.5, 0.5]]},
        "i1": {"samples": [[0.9, 0.1], [0.1, 0.9]]},
    }
    import_rows(project, [0.5, 0.5, 0.5], **samples)

    queue_select(
        project=project,
        policy=policy({"rule": "uncertain", "measure": "mutual_information", "top": 1}),
    )

    assert queued(project) == [("i1", "uncertain")]


def test_mutual_information_without_samples_is_a_clear_error_and_queues_nothing(
    project: Project,
) -> None:
    import_rows(project, [0.5])

    with pytest.raises(InvalidInput) as caught:
        queue_select(
            project=project,
            policy=policy({"rule": "uncertain", "measure": "mutual_information", "top": 5}),
        )

    assert caught.value.errors[0].field == "rules[0].measure"
    assert "needs predictions with `samples`" in caught.value.errors[0].reason
    assert not QueueEntry.objects.exists()
    assert not QueuePolicy.objects.exists()


def test_a_project_without_predictions_cannot_be_queued(project: Project) -> None:
    with pytest.raises(InvalidInput, match="no predictions to queue"):
        queue_select(project=project)


def test_multi_class_near_threshold_uses_the_top_two_margin(
    make_project: Callable[..., Project],
) -> None:
    project = make_project(slug="pets", labels=["cat", "dog", "fish"])
    rows = [
        {"cat": 0.4, "dog": 0.35, "fish": 0.25},
        {"cat": 0.8, "dog": 0.1, "fish": 0.1},
    ]
    content = "\n".join(
        json.dumps(
            {"external_id": f"i{n}", "payload": {}, "model_version": "m", "probabilities": p}
        )
        for n, p in enumerate(rows)
    )
    predictions_import(project=project, stream=io.BytesIO(content.encode()), fmt="jsonl")

    queue_select(project=project, policy=policy({"rule": "near_threshold", "band": 0.1}))

    assert queued(project) == [("i0", "near_threshold")]


# Bad policies.


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"rules": [{"rule": "bogus"}]}, "rules[0].rule", "unknown rule 'bogus'"),
        (
            {"rules": [{"rule": "near_threshold", "band": 0}]},
            "rules[0].band",
            "must be in (0, 0.5]",
        ),
        (
            {"rules": [{"rule": "near_threshold", "band": 0.6}]},
            "rules[0].band",
            "must be in (0, 0.5]",
        ),
        (
            {"rules": [{"rule": "random", "fraction": 1.5}]},
            "rules[0].fraction",
            "must be in [0, 1]",
        ),
        (
            {"rules": [{"rule": "random", "fraction": -0.1}]},
            "rules[0].fraction",
            "must be in [0, 1]",
        ),
        ({"rules": [{"rule": "random"}]}, "rules[0].fraction", "is required"),
        ({"rules": [{"rule": "random", "fraction": 0.1}], "budget": -1}, "budget", "≥ 0"),
        (
            {"rules": [{"rule": "uncertain", "measure": "vibes", "top": 1}]},
            "rules[0].measure",
            "one of",
        ),
        ({"rules": [{"rule": "uncertain", "measure": "entropy"}]}, "rules[0]", "needs `top`"),
        (
            {"rules": [{"rule": "random", "fraction": 0.1, "band": 1}]},
            "rules[0].band",
            "not a field",
        ),
        ({"rules": []}, "rules", "non-empty list"),
        ({"rules": [], "colour": 1}, "colour", "unknown field"),
    ],
)
def test_each_bad_policy_is_named_and_nothing_is_queued(
    project: Project, data: dict[str, Any], field: str, reason: str
) -> None:
    import_rows(project, [0.5])

    with pytest.raises(InvalidInput) as caught:
        queue_select(project=project, policy=parse_policy(data))

    assert any(e.field == field and reason in e.reason for e in caught.value.errors), (
        caught.value.errors
    )
    assert not QueueEntry.objects.exists()


# The command and the API.


def test_the_queue_command_prints_how_many_each_rule_took(project: Project, tmp_path: Path) -> None:
    import_rows(project, [0.5, 0.45, 0.99])
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"rules": [{"rule": "near_threshold", "band": 0.1}]}))
    out = io.StringIO()

    call_command("queue", "pet-match", "--policy", str(path), stdout=out)

    assert out.getvalue().splitlines() == [
        "policy v1, model m1: 2 of 3 eligible items queued",
        "  near_threshold: 2",
    ]


def test_the_queue_command_refuses_a_negative_budget(project: Project) -> None:
    import_rows(project, [0.5])

    with pytest.raises(CommandError, match="field budget: must be a whole number ≥ 0, got -1"):
        call_command("queue", "pet-match", "--budget", "-1")
    assert not QueueEntry.objects.exists()


def test_an_engineer_queues_through_the_api(project: Project, engineer_api: APIClient) -> None:
    import_rows(project, [0.5, 0.9])

    response = engineer_api.post(
        "/api/v1/projects/pet-match/queue",
        {"policy": {"rules": [{"rule": "near_threshold", "band": 0.1}]}},
        format="json",
    )

    assert response.status_code == 200, response.json()
    assert response.json()["by_rule"] == [{"rule": "near_threshold", "queued": 1}]


def test_a_bad_policy_through_the_api_is_a_400_naming_the_field(
    project: Project, engineer_api: APIClient
) -> None:
    import_rows(project, [0.5])

    response = engineer_api.post(
        "/api/v1/projects/pet-match/queue",
        {"policy": {"rules": [{"rule": "near_threshold", "band": 2}]}},
        format="json",
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "rules[0].band"


def test_a_large_project_is_queued_by_a_background_job(
    project: Project,
    engineer_api: APIClient,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
    eager_jobs: None,
) -> None:
    import_rows(project, [0.5, 0.52])
    settings.SYNC_QUEUE_MAX_PREDICTIONS = 1

    with django_capture_on_commit_callbacks(execute=True):
        response = engineer_api.post(
            "/api/v1/projects/pet-match/queue", {"budget": 1}, format="json"
        )

    assert response.status_code == 202
    job = engineer_api.get(response.json()["url"]).json()
    assert job["status"] == "succeeded", job
    assert job["result"]["queued"] == 1


def test_crowd_and_experts_cannot_queue(
    project: Project, crowd_api: APIClient, expert_api: APIClient
) -> None:
    for client in (crowd_api, expert_api):
        assert client.post("/api/v1/projects/pet-match/queue", {}, format="json").status_code == 403
