"""Crowd work through the API: leases, answers, skips, overlap, gold checks and expiry."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.permissions import Role
from labelling.models import Item, Label, Lease, Project, QueueEntry
from labelling.policy import parse_policy
from labelling.services.gold import gold_import
from labelling.services.imports import predictions_import
from labelling.services.leasing import leases_expire
from labelling.services.queueing import queue_select

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def no_gold_warm_up(settings: Any) -> None:
    """Most tests want queue items straight away; gold checks have tests of their own."""
    settings.NEW_LABELLER_GOLD = 0


def import_items(project: Project, numbers: range) -> None:
    """Predictions for items i{k}, k in numbers (not queued)."""
    rows = "\n".join(
        json.dumps(
            {
                "external_id": f"i{k}",
                "payload": {"text": f"item {k}"},
                "model_version": "m1",
                "probabilities": {"match": 0.5 + k / 1000, "no_match": 0.5 - k / 1000},
            }
        )
        for k in numbers
    )
    predictions_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")


def queued_project(project: Project, n: int = 3, *, overlap: tuple[int, int] = (3, 5)) -> Project:
    """The project with n items queued (i0 most urgent), overlap min and max as given."""
    project.overlap_min, project.overlap_max = overlap
    project.gold_rate = 0
    project.save()
    import_items(project, range(n))
    queue_select(
        project=project, policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]})
    )
    return project


def crowd(client_for: Callable[..., APIClient], project: Project, n: int) -> list[APIClient]:
    return [client_for(project, f"worker{k}", Role.CROWD) for k in range(n)]


def next_task(client: APIClient) -> dict[str, Any] | None:
    response = client.get("/api/v1/projects/pet-match/tasks/next")
    assert response.status_code in (200, 204), response.content
    return response.json() if response.status_code == 200 else None


def answer(client: APIClient, lease: int, label: str = "match", **extra: Any) -> Any:
    return client.post(f"/api/v1/leases/{lease}/label", {"label": label, **extra}, format="json")


def test_a_labeller_gets_an_item_with_only_what_they_need_to_label_it(
    project: Project, crowd_api: APIClient
) -> None:
    queued_project(project)
    project.instructions = "Be careful"
    project.save()

    task = next_task(crowd_api)

    assert task is not None
    assert set(task) == {"lease", "item", "labels", "instructions", "expires_at"}
    assert set(task["item"]) == {"external_id", "payload"}
    assert (task["labels"], task["instructions"]) == (["match", "no_match"], "Be careful")
    assert Item.objects.get(external_id=task["item"]["external_id"]).state == "collecting"


def test_asking_again_returns_the_same_open_lease(project: Project, crowd_api: APIClient) -> None:
    queued_project(project)

    assert next_task(crowd_api)["lease"] == next_task(crowd_api)["lease"]  # type: ignore[index]


def test_an_answer_is_recorded_with_its_duration_and_a_repeat_returns_the_same(
    project: Project, crowd_api: APIClient
) -> None:
    queued_project(project)
    lease = next_task(crowd_api)["lease"]  # type: ignore[index]

    first = answer(crowd_api, lease, duration_ms=1840)
    again = answer(crowd_api, lease, duration_ms=1840)

    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    label = Label.objects.get()
    assert (label.value, label.duration_ms, label.source) == ("match", 1840, "api")
    assert label.created_at is not None


def test_a_label_outside_the_set_is_refused_and_nothing_stored(
    project: Project, crowd_api: APIClient
) -> None:
    queued_project(project)
    lease = next_task(crowd_api)["lease"]  # type: ignore[index]

    response = answer(crowd_api, lease, "maybe")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "label"
    assert not Label.objects.exists()


def test_someone_elses_lease_is_not_found(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project)
    alice, bob = crowd(client_for, project, 2)
    lease = next_task(alice)["lease"]  # type: ignore[index]

    assert answer(bob, lease).status_code == 404
    assert bob.post(f"/api/v1/leases/{lease}/skip").status_code == 404
    assert not Label.objects.exists()


def test_an_expired_lease_is_a_conflict_and_its_item_goes_back(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project, n=1, overlap=(1, 1))
    alice, bob = crowd(client_for, project, 2)
    lease = next_task(alice)["lease"]  # type: ignore[index]
    assert next_task(bob) is None
    Lease.objects.filter(pk=lease).update(expires_at=timezone.now() - timedelta(seconds=1))

    refused = answer(alice, lease)
    offered = next_task(bob)

    assert refused.status_code == 409
    assert "expired" in refused.json()["detail"]
    assert offered is not None and offered["item"]["external_id"] == "i0"


def test_each_item_gets_exactly_its_overlap_and_no_labeller_twice(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project, n=2, overlap=(3, 3))
    workers = crowd(client_for, project, 5)

    for worker in workers:
        while (task := next_task(worker)) is not None:
            assert answer(worker, task["lease"]).status_code == 201

    counts = {e.item.external_id: e.labels_count for e in QueueEntry.objects.select_related("item")}
    assert counts == {"i0": 3, "i1": 3}
    assert Label.objects.count() == 6
    pairs = list(Label.objects.values_list("item_id", "labeller_id"))
    assert len(pairs) == len(set(pairs))
    assert set(Item.objects.values_list("state", flat=True)) == {"approved"}


def test_disagreement_asks_for_one_more_label_at_a_time_up_to_the_maximum(
    project: Project, client_for: Callable[..., APIClient]
) -> None:
    queued_project(project, n=1, overlap=(2, 4))
    workers = crowd(client_for, project, 6)
    answers = ["match", "no_match", "match", "no_match"]

    given = []
    for worker, label in zip(workers, answers, strict=False):
        task = next_task(worker)
        if task is None:
            break
        answer(worker, task["lease"], label)
        given.append(label)

    entry = QueueEntry.objects.get()
    assert (entry.needed, entry.labels_count, entry.collecting) == (4, 4, False)
    assert next_task(workers[5]) is None
    assert Item.objects.get().state == "escalated"


def test_a_skipped_item_is_not_offered_to_that_labeller_again(
    project: Project, crowd_api: APIClient
) -> None:
    queued_project(project, n=2)
    first = next_task(crowd_api)

    assert crowd_api.post(f"/api/v1/leases/{first['lease']}/skip").status_code == 200  # type: ignore[index]
    second = next_task(crowd_api)

    assert second is not None and second["item"]["external_id"] != first["item"]["external_id"]  # type: ignore[index]
    answer(crowd_api, second["lease"])
    assert next_task(crowd_api) is None


def test_undo_takes_back_the_answer_while_the_lease_is_open(
    project: Project, crowd_api: APIClient
) -> None:
    queued_project(project)
    lease = next_task(crowd_api)["lease"]  # type: ignore[index]
    answer(crowd_api, lease, "match")

    undone = crowd_api.post(f"/api/v1/leases/{lease}/undo")
    again = answer(crowd_api, lease, "no_match")

    assert undone.status_code == 200 and undone.json()["lease"] == lease
    assert again.status_code == 201
    states = sorted(Label.objects.values_list("value", "state"))
    assert states == [("match", "voided"), ("no_match", "valid")]
    assert QueueEntry.objects.get(item__external_id="i0").labels_count == 1


def test_a_heartbeat_extends_the_lease(project: Project, crowd_api: APIClient) -> None:
    queued_project(project)
    lease = next_task(crowd_api)["lease"]  # type: ignore[index]
    Lease.objects.filter(pk=lease).update(expires_at=timezone.now() + timedelta(seconds=5))

    response = crowd_api.post(f"/api/v1/leases/{lease}/heartbeat")

    assert response.status_code == 200
    assert Lease.objects.get(pk=lease).expires_at > timezone.now() + timedelta(minutes=5)


def test_expiry_returns_leased_items_to_the_queue(project: Project, crowd_api: APIClient) -> None:
    queued_project(project, n=1)
    next_task(crowd_api)
    assert QueueEntry.objects.get().open_leases == 1

    expired = leases_expire(now=timezone.now() + timedelta(hours=1))

    assert expired == 1
    assert QueueEntry.objects.get().open_leases == 0
    assert Lease.objects.get().state == "expired"


def test_gold_checks_come_first_for_new_labellers_and_their_answers_stay_hidden(
    project: Project, crowd_api: APIClient, settings: Any
) -> None:
    settings.NEW_LABELLER_GOLD = 2
    queued_project(project, n=4)
    gold_import(
        project=project,
        stream=io.BytesIO(
            b'{"external_id": "i3", "label": "no_match"}\n{"external_id": "i2", "label": "match"}'
        ),
        fmt="jsonl",
    )

    seen = []
    for _ in range(4):
        task = next_task(crowd_api)
        if task is None:
            break
        assert "gold" not in json.dumps(task).lower()
        seen.append(task["item"]["external_id"])
        answer(crowd_api, task["lease"])

    assert sorted(seen[:2]) == ["i2", "i3"]
    assert sorted(seen[2:]) == ["i0", "i1"]
    assert Lease.objects.filter(is_gold=True).count() == 2
    assert QueueEntry.objects.get(item__external_id="i3").labels_count == 0


def test_only_members_of_the_project_get_work(
    project: Project, make_project: Callable[..., Project], client_for: Callable[..., APIClient]
) -> None:
    queued_project(project)
    other = make_project(slug="other")
    outsider = client_for(other, "outsider", Role.CROWD)

    assert outsider.get("/api/v1/projects/pet-match/tasks/next").status_code == 404
    assert APIClient().get("/api/v1/projects/pet-match/tasks/next").status_code == 401


def test_a_paused_labeller_gets_a_clear_conflict(project: Project, crowd_api: APIClient) -> None:
    from labelling.models import Labeller

    queued_project(project)
    Labeller.objects.filter(user__username="cora-crowd").update(status="paused")

    response = crowd_api.get("/api/v1/projects/pet-match/tasks/next")

    assert response.status_code == 409
    assert "paused" in response.json()["detail"]


def test_a_burst_of_submissions_is_throttled(
    project: Project, crowd_api: APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from django.core.cache import cache
    from rest_framework.throttling import ScopedRateThrottle

    cache.clear()
    monkeypatch.setattr(ScopedRateThrottle, "THROTTLE_RATES", {"labels": "2/minute"})
    queued_project(project)

    responses = [answer(crowd_api, 999999) for _ in range(4)]

    cache.clear()
    assert [r.status_code for r in responses] == [404, 404, 429, 429]
    # The rest of the minute, for the one request that will then fit (a refusal is not counted).
    assert 50 <= int(responses[2]["Retry-After"]) <= 60
    assert 50 <= int(responses[3]["Retry-After"]) <= 60


def test_a_repeat_with_another_label_is_a_conflict(project: Project, crowd_api: APIClient) -> None:
    queued_project(project)
    lease = next_task(crowd_api)["lease"]  # type: ignore[index]
    answer(crowd_api, lease, "match")

    response = answer(crowd_api, lease, "no_match")

    assert response.status_code == 409
    assert "undo" in response.json()["detail"]
    assert list(Label.objects.values_list("value", flat=True)) == ["match"]


def test_undo_gives_back_the_next_item_and_renews_the_lease(
    project: Project, crowd_api: APIClient
) -> None:
    queued_project(project)
    first = next_task(crowd_api)["lease"]  # type: ignore[index]
    answer(crowd_api, first)
    second = next_task(crowd_api)["lease"]  # type: ignore[index]
    Lease.objects.filter(pk=first).update(expires_at=timezone.now() + timedelta(seconds=3))

    crowd_api.post(f"/api/v1/leases/{first}/undo")

    assert Lease.objects.get(pk=second).state == "expired"
    assert Lease.objects.get(pk=first).expires_at > timezone.now() + timedelta(minutes=5)
    assert next_task(crowd_api)["lease"] == first  # type: ignore[index]
    assert QueueEntry.objects.get(item=Lease.objects.get(pk=second).item).open_leases == 0
