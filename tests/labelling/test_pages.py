"""Server-rendered pages: log-in, the home page's projects and the engineer's dashboard."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client
from pytest_django import Settings

from core.permissions import Role
from labelling.models import Project
from labelling.services.imports import predictions_import
from labelling.services.labellers import labeller_create

PASSWORD = "correct-horse-battery-staple"
MakeUser = Callable[..., AbstractBaseUser]


@pytest.fixture(autouse=True)
def plain_static_files(settings: Settings) -> None:
    """Serve static files without the manifest that only `collectstatic` writes.

    With DEBUG off (as in every test run) core/settings.py picks whitenoise's
    CompressedManifestStaticFilesStorage, whose {% static %} raises "Missing staticfiles
    manifest entry" until collectstatic has run: every page would be a 500.
    """
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Settings) -> None:
    """A weak, fast hasher: the default one takes most of a second per password."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_user(db: None) -> MakeUser:
    """A user with a password and a role in a project, made through the labeller service."""

    def make(project: Project, username: str, role: Role) -> AbstractBaseUser:
        labeller, _ = labeller_create(project=project, username=username, role=role)
        user = labeller.user
        assert user is not None
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])
        return user

    return make


def logged_in(user: AbstractBaseUser) -> Client:
    client = Client()
    assert client.login(username=user.get_username(), password=PASSWORD)
    return client


def import_rows(project: Project, lines: list[str]) -> None:
    """Import JSONL prediction rows through the import service."""
    content = "\n".join(lines).encode()
    predictions_import(project=project, stream=io.BytesIO(content), fmt="jsonl")


def prediction(external_id: str, match: float, pet: str) -> str:
    return (
        f'{{"external_id": "{external_id}", "payload": {{"pet": "{pet}"}}, '
        f'"model_version": "m7", "probabilities": {{"match": {match}, "no_match": {1 - match}}}}}'
    )


# Logging in


def test_the_login_page_renders(client: Client, db: None) -> None:
    response = client.get("/accounts/login/")

    assert response.status_code == 200
    assert b'name="username"' in response.content
    assert b'name="password"' in response.content


def test_a_user_logs_in_and_lands_on_the_home_page(
    client: Client, project: Project, make_user: MakeUser
) -> None:
    make_user(project, "erin", Role.ENGINEER)

    response = client.post("/accounts/login/", {"username": "erin", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").context["user"].get_username() == "erin"


def test_a_wrong_password_is_refused(client: Client, project: Project, make_user: MakeUser) -> None:
    make_user(project, "erin", Role.ENGINEER)

    response = client.post("/accounts/login/", {"username": "erin", "password": "wrong"})

    assert response.status_code == 200
    assert b"do not match" in response.content
    assert not response.context["user"].is_authenticated


def test_a_user_made_by_create_labeller_cannot_log_in_without_a_password(
    client: Client, project: Project
) -> None:
    labeller_create(project=project, username="cora", role=Role.CROWD)

    assert not client.login(username="cora", password="")


# The home page


def test_the_home_page_lists_the_users_projects_and_roles(
    make_project: Callable[..., Project], make_user: MakeUser
) -> None:
    pets = make_project(name="Pet-service matching")
    spam = make_project(slug="spam", name="Spam filter")
    make_project(slug="secret", name="Secret project")
    user = make_user(pets, "erin", Role.ENGINEER)
    labeller_create(project=spam, username="erin", role=Role.CROWD)

    response = logged_in(user).get("/")

    assert response.status_code == 200
    text = response.content.decode()
    assert "Pet-service matching" in text
    assert "Spam filter" in text
    assert "Secret project" not in text
    assert "Engineer" in text
    assert "Crowd labeller" in text
    assert "/projects/pet-match/" in text
    assert "/projects/spam/" not in text  # a crowd labeller gets no dashboard link


def test_the_home_page_says_so_when_the_user_has_no_project(
    client: Client, project: Project, django_user_model: type[AbstractBaseUser]
) -> None:
    django_user_model.objects.create_user(username="nobody", password=PASSWORD)  # type: ignore[attr-defined]
    client.login(username="nobody", password=PASSWORD)

    response = client.get("/")

    assert b"no role in any project" in response.content
    assert b"pet-match" not in response.content


def test_the_home_page_sends_an_anonymous_visitor_to_log_in(client: Client, db: None) -> None:
    response = client.get("/")

    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")


# The engineer's dashboard


def test_the_dashboard_shows_an_engineer_what_came_in_and_what_the_model_doubts(
    project: Project, make_user: MakeUser
) -> None:
    user = make_user(project, "erin", Role.ENGINEER)
    import_rows(
        project,
        [
            prediction("sure-1", 0.99, "Calm old cat"),
            prediction("doubt-1", 0.51, "Nervous rescue dog"),
            prediction("doubt-2", 0.45, "Talkative parrot"),
        ],
    )

    response = logged_in(user).get("/projects/pet-match/")

    assert response.status_code == 200
    text = response.content.decode()
    assert project.name in text
    assert response.context["overview"]["items"] == 3
    assert '<span class="n">3</span> items' in text
    assert "<code>m7</code>" in text
    assert '<svg class="histogram"' in text
    assert text.count("<rect ") == 20
    doubtful = [p.item.external_id for p, _ in response.context["doubtful"]]
    assert doubtful[:2] == ["doubt-1", "doubt-2"]
    assert "Nervous rescue dog" in text
    assert "<code>doubt-1</code>: match at 0.51" in text


def test_the_dashboard_of_a_project_without_predictions_says_how_to_import(
    project: Project, make_user: MakeUser
) -> None:
    user = make_user(project, "erin", Role.ENGINEER)

    response = logged_in(user).get("/projects/pet-match/")

    assert response.status_code == 200
    assert b"No predictions yet" in response.content
    assert b"<svg" not in response.content


def test_a_superuser_sees_every_dashboard(
    project: Project, client: Client, django_user_model: type[AbstractBaseUser]
) -> None:
    admin = django_user_model.objects.create_superuser("root", "root@example.com", PASSWORD)  # type: ignore[attr-defined]
    client.force_login(admin)

    assert client.get("/projects/pet-match/").status_code == 200


@pytest.mark.parametrize("role", [Role.CROWD, Role.EXPERT])
def test_a_crowd_labeller_or_an_expert_may_not_see_the_dashboard(
    project: Project, make_user: MakeUser, role: Role
) -> None:
    user = make_user(project, "cora", role)

    response = logged_in(user).get("/projects/pet-match/")

    assert response.status_code == 403
    assert b"Not allowed" in response.content
    assert project.name.encode() not in response.content


def test_a_user_with_no_role_in_the_project_gets_not_found(
    make_project: Callable[..., Project], make_user: MakeUser
) -> None:
    make_project()
    user = make_user(make_project(slug="other"), "olga", Role.ENGINEER)

    response = logged_in(user).get("/projects/pet-match/")

    assert response.status_code == 404


def test_an_unknown_project_is_not_found(project: Project, make_user: MakeUser) -> None:
    user = make_user(project, "erin", Role.ENGINEER)

    assert logged_in(user).get("/projects/no-such-project/").status_code == 404


def test_the_dashboard_sends_an_anonymous_visitor_to_log_in(
    client: Client, project: Project
) -> None:
    response = client.get("/projects/pet-match/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/projects/pet-match/"
