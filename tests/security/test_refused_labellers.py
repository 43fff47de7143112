"""A labeller an engineer rejected or blocked does no more work through a lease they still hold;
a paused one finishes the item in hand (the engineer decides about their work later, as for
outside workers)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from rest_framework.test import APIClient

from labelling.models import Label, Labeller, Lease, QueueEntry
from labelling.services.labellers import labeller_block, labeller_reject
from tests.security.world import World

WORK = [
    ("label", "open_lease", {"label": "no_match"}),
    ("heartbeat", "open_lease", None),
    ("skip", "open_lease", None),
    ("undo", "answered_lease", None),
]


def cora(world: World) -> Labeller:
    return Labeller.objects.get(project=world.a.project, user__username="cora")


@pytest.mark.parametrize(("action", "lease", "body"), WORK, ids=[w[0] for w in WORK])
def test_a_rejected_labeller_can_no_longer_work_on_the_lease_they_hold(
    world: World, api_as: Callable[[str], APIClient], action: str, lease: str, body: object
) -> None:
    labeller_reject(labeller=cora(world), user=world.people["engineer"], reason="at random")
    valid_before = Label.objects.filter(labeller=cora(world), state="valid").count()

    response = api_as("crowd").post(
        f"/api/v1/leases/{getattr(world.a, lease)}/{action}", body, format="json"
    )

    assert response.status_code == 409, response.content
    assert "rejected" in response.json()["detail"]
    assert Label.objects.filter(labeller=cora(world), state="valid").count() == valid_before


def test_rejecting_a_labeller_gives_back_the_item_they_held(
    world: World, api_as: Callable[[str], APIClient]
) -> None:
    held = Lease.objects.get(pk=world.a.open_lease)
    open_before = QueueEntry.objects.get(item_id=held.item_id).open_leases

    labeller_reject(labeller=cora(world), user=world.people["engineer"], reason="at random")

    held.refresh_from_db()
    assert held.state == Lease.State.EXPIRED
    assert QueueEntry.objects.get(item_id=held.item_id).open_leases == open_before - 1


@pytest.mark.parametrize(("action", "lease", "body"), WORK, ids=[w[0] for w in WORK])
def test_a_blocked_labeller_can_no_longer_work_on_the_lease_they_hold(
    world: World, api_as: Callable[[str], APIClient], action: str, lease: str, body: object
) -> None:
    labeller_block(labeller=cora(world), user=world.people["engineer"], reason="spam")

    response = api_as("crowd").post(
        f"/api/v1/leases/{getattr(world.a, lease)}/{action}", body, format="json"
    )

    assert response.status_code == 409, response.content
    assert "blocked" in response.json()["detail"]


def test_a_paused_labeller_finishes_the_item_in_hand_and_gets_no_other(
    world: World, api_as: Callable[[str], APIClient]
) -> None:
    Labeller.objects.filter(pk=cora(world).pk).update(status=Labeller.Status.PAUSED)
    client = api_as("crowd")

    answered = client.post(
        f"/api/v1/leases/{world.a.open_lease}/label", {"label": "match"}, format="json"
    )
    more = client.get(f"/api/v1/projects/{world.a.slug}/tasks/next")

    assert answered.status_code == 201
    assert more.status_code == 409 and "paused" in more.json()["detail"]
