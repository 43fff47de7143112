"""The labelling page as the server renders it: who may open it and what it holds."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
from django.contrib.auth.models import AbstractBaseUser
from django.test import Client
from pytest_django import Settings

from core.permissions import Role
from labelling.models import Labeller, Project
from labelling.rendering import instructions_html, label_buttons
from labelling.services.gold import gold_import
from labelling.services.imports import predictions_import
from labelling.services.labellers import labeller_create

PASSWORD = "correct-horse-battery-staple"
MakeUser = Callable[..., AbstractBaseUser]

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def plain_static_files(settings: Settings) -> None:
    """Plain static file names: the manifest storage needs `collectstatic` (see test_pages)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def make_user() -> MakeUser:
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


def page_of(client: Client, slug: str = "pet-match") -> str:
    response = client.get(f"/label/{slug}/")
    assert response.status_code == 200
    return response.content.decode()


@pytest.mark.parametrize("role", [Role.CROWD, Role.EXPERT, Role.ENGINEER])
def test_the_page_renders_for_every_role_with_a_button_and_a_key_per_label(
    project: Project, make_user: MakeUser, role: Role
) -> None:
    text = page_of(logged_in(make_user(project, "lee", role)))

    assert 'data-label="match" data-key="1" aria-keyshortcuts="1"' in text
    assert 'data-label="no_match" data-key="2" aria-keyshortcuts="2"' in text
    assert 'aria-keyshortcuts="s"' in text
    assert 'aria-keyshortcuts="u Backspace"' in text
    assert "js/label.js" in text
    assert "Done this session" in text


def test_the_page_tells_its_script_where_the_api_is(project: Project, make_user: MakeUser) -> None:
    response = logged_in(make_user(project, "cora", Role.CROWD)).get("/label/pet-match/")

    config = response.context["config"]
    assert config["next_url"] == "/api/v1/projects/pet-match/tasks/next"
    assert config["lease_url"] == "/api/v1/leases/"
    assert '<script id="label-config" type="application/json">' in response.content.decode()
    assert 'data-csrf="' in response.content.decode()


def test_a_non_member_gets_not_found(
    project: Project, make_project: Callable[..., Project], make_user: MakeUser
) -> None:
    outsider = make_user(make_project(slug="other"), "olly", Role.ENGINEER)

    assert logged_in(outsider).get("/label/pet-match/").status_code == 404
    assert logged_in(outsider).get("/label/no-such-project/").status_code == 404


def test_a_blocked_labeller_gets_not_found(project: Project, make_user: MakeUser) -> None:
    user = make_user(project, "cora", Role.CROWD)
    Labeller.objects.filter(user_id=user.pk).update(status=Labeller.Status.BLOCKED)

    assert logged_in(user).get("/label/pet-match/").status_code == 404


def test_an_anonymous_visitor_is_sent_to_log_in(client: Client, project: Project) -> None:
    response = client.get("/label/pet-match/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/label/pet-match/"


def test_the_page_holds_no_gold_answer_and_no_item(project: Project, make_user: MakeUser) -> None:
    rows = "\n".join(
        json.dumps(
            {
                "external_id": f"secret-{k}",
                "payload": {"text": f"payload-{k}"},
                "model_version": "m1",
                "probabilities": {"match": 0.9, "no_match": 0.1},
            }
        )
        for k in range(2)
    )
    predictions_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")
    gold_import(
        project=project,
        stream=io.BytesIO(b'{"external_id": "secret-0", "label": "no_match"}'),
        fmt="jsonl",
    )

    text = page_of(logged_in(make_user(project, "cora", Role.CROWD)))

    assert "gold" not in text.lower()
    assert "secret-" not in text
    assert "payload-" not in text
    assert "consensus" not in text.lower()


def test_instructions_are_shown_open_with_a_safe_markdown_subset(
    project: Project, make_user: MakeUser
) -> None:
    project.instructions = "**Look** closely.\n\n- one\n- two <b>\n\n<script>alert(1)</script>"
    project.save()

    text = page_of(logged_in(make_user(project, "cora", Role.CROWD)))

    assert '<details class="instructions" id="instructions" open>' in text
    assert "<p><strong>Look</strong> closely.</p>" in text
    assert "<ul><li>one</li><li>two &lt;b&gt;</li></ul>" in text
    assert "<script>alert(1)</script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_a_project_without_instructions_shows_no_instructions_box(
    project: Project, make_user: MakeUser
) -> None:
    text = page_of(logged_in(make_user(project, "cora", Role.CROWD)))

    assert 'id="instructions"' not in text


def test_instructions_join_wrapped_lines_and_continue_list_items() -> None:
    html = instructions_html("First line\nsecond line.\n\n- an item\n  continued\n- `code`")

    assert html == (
        "<p>First line second line.</p>\n"
        "<ul><li>an item continued</li><li><code>code</code></li></ul>"
    )


def test_one_character_labels_are_their_own_keys_and_others_get_digits() -> None:
    digits = label_buttons([str(d) for d in range(10)])
    words = label_buttons([f"w{k}" for k in range(11)])
    clashing = label_buttons(["y", "s", "n"])

    assert [b.key for b in digits] == [str(d) for d in range(10)]
    assert [b.key for b in words] == [*"1234567890", ""]
    assert [b.key for b in clashing] == ["1", "2", "3"]


def test_the_key_hint_says_which_keys_answer(
    make_project: Callable[..., Project], make_user: MakeUser
) -> None:
    digits = make_project(slug="digits", labels=[str(d) for d in range(10)])
    mixed = make_project(slug="mixed", labels=["1", "ab"])
    user = make_user(digits, "cora", Role.CROWD)
    labeller_create(project=mixed, username="cora", role=Role.CROWD)
    client = logged_in(user)

    assert "Keys: the label itself" in page_of(client, "digits")
    assert 'data-label="7" data-key="7" aria-keyshortcuts="7"' in page_of(client, "digits")
    assert "Keys: the label itself" not in page_of(client, "mixed")
    assert 'data-label="ab" data-key="2"' in page_of(client, "mixed")
