"""The labellers pages (engineers) and the sign-up page of an invitation."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from core.permissions import Role
from labelling.models import Invitation, Label, Labeller, LabellerDecision, Project
from labelling.services.consensus import consensus_compute
from labelling.services.invitations import invitation_create
from labelling.services.labellers import labeller_create
from labelling.services.labels import labels_import

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-enough-passphrase-7"


def logged_in(project: Project, username: str, role: Role) -> Client:
    labeller_create(project=project, username=username, role=role)
    client = Client()
    client.force_login(get_user_model().objects.get(username=username))
    return client


def crowd_work(project: Project) -> None:
    rows = [
        {"external_id": f"a{i}", "labeller": who, "label": label}
        for i in range(4)
        for who, label in (("w1", "match"), ("w2", "match"), ("spam", "no_match"))
    ]
    content = "\n".join(json.dumps(row) for row in rows).encode()
    labels_import(project=project, stream=io.BytesIO(content), fmt="jsonl")
    consensus_compute(project=project)


def test_the_labellers_page_shows_figures_flags_and_charts(project: Project) -> None:
    crowd_work(project)
    Labeller.objects.filter(worker_id="spam").update(flags=["random"], status="paused")
    engineer = logged_in(project, "erin", Role.ENGINEER)

    page = engineer.get("/projects/pet-match/labellers/").content.decode()

    assert "spam" in page and "w1" in page
    assert '<code class="flag">random</code>' in page
    assert "Approve" in page and "<svg" in page


def test_an_engineer_rejects_a_labeller_from_the_page(project: Project) -> None:
    crowd_work(project)
    engineer = logged_in(project, "erin", Role.ENGINEER)
    spam = Labeller.objects.get(worker_id="spam")

    response = engineer.post(
        "/projects/pet-match/labellers/",
        {"labeller": spam.pk, "action": "reject", "reason": "always disagrees"},
        follow=True,
    )

    assert "4 labels voided" in response.content.decode()
    assert set(Label.objects.filter(labeller=spam).values_list("state", flat=True)) == {"voided"}
    decision = LabellerDecision.objects.get(kind="reject")
    assert (decision.reason, decision.decided_by.username) == ("always disagrees", "erin")


def test_a_labeller_of_another_project_cannot_be_decided_from_this_page(
    project: Project, make_project: object
) -> None:
    crowd_work(project)
    other = make_project(slug="other")  # type: ignore[operator]
    outsider = Labeller.objects.create(project=other, platform="import", worker_id="x")
    engineer = logged_in(project, "erin", Role.ENGINEER)

    engineer.post("/projects/pet-match/labellers/", {"labeller": outsider.pk, "action": "block"})

    outsider.refresh_from_db()
    assert outsider.status == "active"


def test_the_labeller_page_shows_the_confusion_matrix_and_batches(project: Project) -> None:
    crowd_work(project)
    engineer = logged_in(project, "erin", Role.ENGINEER)
    spam = Labeller.objects.get(worker_id="spam")

    page = engineer.get(f"/projects/pet-match/labellers/{spam.pk}/").content.decode()

    assert "Confusion matrix" in page and "Reject this batch" in page
    assert engineer.get("/projects/pet-match/labellers/999999/").status_code == 404


def test_crowd_labellers_cannot_see_the_labellers_pages(project: Project) -> None:
    crowd_work(project)
    crowd = logged_in(project, "cora", Role.CROWD)

    assert crowd.get("/projects/pet-match/labellers/").status_code == 403
    assert crowd.post("/projects/pet-match/labellers/", {"action": "block"}).status_code == 403


def test_following_a_sign_up_link_makes_an_account_and_opens_the_labelling_page(
    project: Project,
) -> None:
    invitation = invitation_create(project=project, user=None)
    client = Client()

    form = client.get(f"/join/{invitation.token}/")
    joined = client.post(f"/join/{invitation.token}/", {"username": "newbie", "password": PASSWORD})

    assert form.status_code == 200 and "Join" in form.content.decode()
    assert joined.status_code == 302 and joined["Location"] == "/label/pet-match/"
    assert Labeller.objects.get(user__username="newbie").role == "crowd"
    assert client.get("/label/pet-match/").status_code == 200


def test_a_weak_password_is_named_on_the_sign_up_page(project: Project) -> None:
    invitation = invitation_create(project=project, user=None)

    page = Client().post(f"/join/{invitation.token}/", {"username": "newbie", "password": "123"})

    assert page.status_code == 400
    assert "too short" in page.content.decode()
    assert not get_user_model().objects.filter(username="newbie").exists()


def test_an_expired_or_unknown_link_says_so(project: Project) -> None:
    invitation = invitation_create(project=project, user=None)
    Invitation.objects.filter(pk=invitation.pk).update(expires_at=timezone.now() - timedelta(1))

    expired = Client().get(f"/join/{invitation.token}/")
    unknown = Client().get("/join/nope/")

    assert expired.status_code == 409 and "expired" in expired.content.decode()
    assert unknown.status_code == 404
