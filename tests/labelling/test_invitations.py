"""Sign-up links: engineers invite labellers; a link makes accounts until expired or used up."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from rest_framework.test import APIClient

from core.exceptions import Conflict, InvalidInput, NotFound
from labelling.models import Invitation, Labeller, Project
from labelling.services.invitations import invitation_accept, invitation_create

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-enough-passphrase-7"


def test_an_engineer_creates_a_sign_up_link_through_the_api(
    project: Project, engineer_api: APIClient
) -> None:
    response = engineer_api.post(
        "/api/v1/projects/pet-match/invitations", {"max_uses": 5, "days": 2}, format="json"
    )

    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["url"].startswith("/join/") and body["role"] == "crowd"
    assert (body["max_uses"], body["uses"]) == (5, 0)


def test_crowd_and_experts_cannot_create_links(
    project: Project, crowd_api: APIClient, expert_api: APIClient
) -> None:
    for client in (crowd_api, expert_api):
        response = client.post("/api/v1/projects/pet-match/invitations", {}, format="json")
        assert response.status_code == 403
    assert not Invitation.objects.exists()


def test_a_link_cannot_make_engineers(project: Project, engineer_api: APIClient) -> None:
    response = engineer_api.post(
        "/api/v1/projects/pet-match/invitations", {"role": "engineer"}, format="json"
    )

    assert response.status_code == 400


def test_accepting_a_link_makes_an_account_with_the_links_role(project: Project) -> None:
    invitation = invitation_create(project=project, user=None, role="expert")

    labeller = invitation_accept(token=invitation.token, username="newbie", password=PASSWORD)

    assert (labeller.project, labeller.role, labeller.status) == (project, "expert", "active")
    assert get_user_model().objects.get(username="newbie").check_password(PASSWORD)
    invitation.refresh_from_db()
    assert invitation.uses == 1


@pytest.mark.parametrize(
    ("username", "password", "field"),
    [
        ("newbie", "123", "password"),
        ("bad name!", PASSWORD, "username"),
        ("taken", PASSWORD, "username"),
    ],
)
def test_a_bad_sign_up_names_the_field_and_creates_nothing(
    project: Project, username: str, password: str, field: str
) -> None:
    get_user_model().objects.create_user(username="taken")
    invitation = invitation_create(project=project, user=None)

    with pytest.raises(InvalidInput) as caught:
        invitation_accept(token=invitation.token, username=username, password=password)

    assert caught.value.errors[0].field == field
    assert not Labeller.objects.exists()
    invitation.refresh_from_db()
    assert invitation.uses == 0


def test_an_expired_or_used_up_link_is_refused(project: Project) -> None:
    expired = invitation_create(project=project, user=None)
    Invitation.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(days=1))
    single = invitation_create(project=project, user=None, max_uses=1)
    invitation_accept(token=single.token, username="first", password=PASSWORD)

    with pytest.raises(Conflict, match="expired"):
        invitation_accept(token=expired.token, username="late", password=PASSWORD)
    with pytest.raises(Conflict):
        invitation_accept(token=single.token, username="second", password=PASSWORD)
    with pytest.raises(NotFound):
        invitation_accept(token="no-such-token", username="x", password=PASSWORD)
    assert not get_user_model().objects.filter(username__in=["late", "second", "x"]).exists()


@pytest.mark.parametrize(("field", "value"), [("max_uses", 0), ("days", 400)])
def test_invitation_limits_are_checked(project: Project, field: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as caught:
        invitation_create(project=project, user=None, **{field: value})
    assert caught.value.errors[0].field == field
