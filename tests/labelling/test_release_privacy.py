"""Privacy in releases: labellers appear only as pseudonyms, and the payload fields a project marks
personal are left out of the rows unless the engineer asks for them (command, API, page), with
the choice recorded in the manifest. On PostgreSQL the rows come from COPY, elsewhere from
Python: the suite runs on both."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from core.exceptions import InvalidInput
from core.permissions import Role
from labelling.models import Project, Release
from labelling.services.labellers import labeller_create
from labelling.services.releases import ReleaseRequest, release_create
from labelling.spec import parse_spec
from tests.labelling.release_world import World, data_of

PAYLOAD = {"pet": "Elderly cat", "owner_name": "Ada Lovelace", "email": "ada@example.org"}
PERSONAL = ["owner_name", "email"]


@pytest.fixture(autouse=True)
def exports(settings: Settings, tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    settings.EXPORT_STORAGE = folder.as_uri()
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    return folder


@pytest.fixture
def world(make_project: Callable[..., Project]) -> World:
    world = World(make_project(personal_fields=PERSONAL))
    for n in range(3):
        world.item(f"a{n}", payload={**PAYLOAD, "pet": f"pet {n}"}, labellers=("w1", "w2", "w3"))
    return world


def payloads(release: Release) -> list[dict[str, Any]]:
    data = data_of(release)
    if release.format == "csv":
        return [json.loads(row["payload"]) for row in csv.DictReader(io.StringIO(data.decode()))]
    key = "source" if release.format == "manifest" else "payload"
    return [json.loads(line)[key] for line in data.splitlines()]


# Pseudonymous labellers


def test_release_rows_name_labellers_only_by_pseudonyms_that_differ_between_projects(
    world: World, make_project: Callable[..., Project]
) -> None:
    other = World(make_project(slug="other-project"))
    other.item("b0", labellers=("w1", "w2", "w3"))

    release = release_create(project=world.project)
    ours = json.loads(data_of(release).splitlines()[0])
    theirs = json.loads(data_of(release_create(project=other.project)).splitlines()[0])

    workers = world.workers.values()
    revealing = {w.worker_id for w in workers} | {str(w.pk) for w in workers}
    assert len(ours["labellers"]) == 3
    assert all(len(p) == 16 and int(p, 16) >= 0 for p in ours["labellers"])
    assert not revealing & set(ours["labellers"])
    assert not set(ours["labellers"]) & set(theirs["labellers"])
    assert not any(name in data_of(release).decode() for name in ("w1", "w2", "w3"))


# Personal payload fields


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "manifest"])
def test_personal_fields_are_left_out_by_default_and_the_manifest_says_so(
    world: World, fmt: str
) -> None:
    release = release_create(project=world.project, request=ReleaseRequest(fmt=fmt))

    rows = payloads(release)
    assert [row["pet"] for row in rows] == ["pet 0", "pet 1", "pet 2"]
    assert all(set(row) == {"pet"} for row in rows)
    assert b"Ada Lovelace" not in data_of(release) and b"ada@example.org" not in data_of(release)
    assert release.manifest["personal_fields"] == {"fields": PERSONAL, "included": False}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "manifest"])
def test_personal_fields_are_kept_when_asked_for_and_the_manifest_says_so(
    world: World, fmt: str
) -> None:
    release = release_create(
        project=world.project, request=ReleaseRequest(fmt=fmt, include_personal=True)
    )

    rows = payloads(release)
    assert all(row["owner_name"] == "Ada Lovelace" for row in rows)
    assert all(row["email"] == "ada@example.org" for row in rows)
    assert release.manifest["personal_fields"] == {"fields": PERSONAL, "included": True}
    manifest = json.loads(
        (Path(release.location.removeprefix("file://")) / "manifest.json").read_text()
    )
    assert manifest["personal_fields"] == {"fields": PERSONAL, "included": True}


def test_leaving_personal_fields_out_changes_nothing_but_the_payload(world: World) -> None:
    left_out = release_create(project=world.project)
    kept = release_create(project=world.project, request=ReleaseRequest(include_personal=True))

    rows = [json.loads(line) for line in data_of(left_out).splitlines()]
    full = [json.loads(line) for line in data_of(kept).splitlines()]
    for row in full:
        row["payload"] = {k: v for k, v in row["payload"].items() if k not in PERSONAL}
    assert rows == full


def test_the_command_leaves_personal_fields_out_unless_told(world: World, tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("export_release", "pet-match", "--out", str(tmp_path / "a"), stdout=out)
    call_command(
        "export_release",
        "pet-match",
        "--out",
        str(tmp_path / "b"),
        "--include-personal",
        stdout=out,
    )

    first, second = Release.objects.order_by("version")
    assert "personal fields left out: owner_name, email" in out.getvalue()
    assert "personal fields included: owner_name, email" in out.getvalue()
    assert "owner_name" not in payloads(first)[0] and "owner_name" in payloads(second)[0]
    assert second.manifest["personal_fields"]["included"] is True


def test_the_api_takes_include_personal(
    world: World,
    client_for: Callable[..., APIClient],
    eager_jobs: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    api = client_for(world.project, "erin-engineer", Role.ENGINEER)
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/projects/pet-match/releases", {}, format="json")
        api.post("/api/v1/projects/pet-match/releases", {"include_personal": True}, format="json")
    bad = api.post(
        "/api/v1/projects/pet-match/releases", {"include_personal": "perhaps"}, format="json"
    )

    details = [api.get(f"/api/v1/releases/{r.pk}").json() for r in Release.objects.order_by("pk")]
    assert [d["manifest"]["personal_fields"]["included"] for d in details] == [False, True]
    assert bad.status_code == 400 and "include_personal" in json.dumps(bad.json())


def test_the_page_has_a_checkbox_for_personal_fields(
    world: World,
    eager_jobs: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    labeller_create(project=world.project, username="erin", role=Role.ENGINEER)
    page = Client()
    page.force_login(get_user_model().objects.get(username="erin"))
    form = page.get("/projects/pet-match/releases/").content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        page.post("/projects/pet-match/releases/", {"format": "jsonl", "include_personal": "on"})

    release = Release.objects.get()
    assert 'name="include_personal"' in form and "<code>owner_name</code>" in form
    assert release.manifest["personal_fields"]["included"] is True
    shown = page.get("/projects/pet-match/releases/").content.decode()
    assert "Personal fields <strong>included</strong>: owner_name, email" in shown


def test_the_spec_marks_personal_fields_and_names_bad_ones() -> None:
    spec = parse_spec({"slug": "p", "labels": ["a", "b"], "personal_fields": ["email"]})

    assert spec.personal_fields == ("email",)
    assert parse_spec({"slug": "p", "labels": ["a", "b"]}).personal_fields == ()
    with pytest.raises(InvalidInput) as bad:
        parse_spec({"slug": "p", "labels": ["a", "b"], "personal_fields": ["email", "", "email"]})
    assert {(e.field, e.reason) for e in bad.value.errors} == {
        ("personal_fields[1]", "must be a non-empty field name, got ''"),
        ("personal_fields[2]", "'email' is named twice"),
    }
    with pytest.raises(InvalidInput) as bad:
        parse_spec({"slug": "p", "labels": ["a", "b"], "personal_fields": "email"})
    assert bad.value.errors[0].field == "personal_fields"
