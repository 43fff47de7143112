"""Releases: row selection, every field, data checks and overrides, sha256, immutability,
filters, formats, the job, the API, the page and the command."""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings
from rest_framework.test import APIClient

from core.exceptions import Conflict, InvalidInput
from core.permissions import Role
from labelling.models import (
    Consensus,
    Escalation,
    Item,
    Job,
    Labeller,
    Project,
    QueueEntry,
    Release,
)
from labelling.releases import checks, pgcopy
from labelling.releases import rows as release_rows
from labelling.releases.checks import ChecksFailed
from labelling.releases.rows import Filters
from labelling.services.labellers import labeller_create
from labelling.services.releases import ReleaseRequest, release_create
from labelling.spec import parse_spec
from tests.labelling.release_world import (
    T0,
    World,
    data_of,
    fail_after_first_chunk,
    files_under,
    lines_of,
)


@pytest.fixture(autouse=True)
def exports(settings: Settings, tmp_path: Path) -> Path:
    """Releases go to a fresh folder of each test."""
    folder = tmp_path / "exports"
    settings.EXPORT_STORAGE = folder.as_uri()
    settings.SECRET_KEY = "release-test-secret"
    return folder


@pytest.fixture
def world(project: Project) -> World:
    return World(project)


def pseudonym(project: Project, labeller: Labeller) -> str:
    message = f"quorum-release:{project.pk}:{labeller.pk}".encode()
    return hmac.new(b"release-test-secret", message, hashlib.sha256).hexdigest()[:16]


# Selection and fields


def test_it_releases_exactly_the_approved_and_resolved_active_items_by_external_id(
    world: World,
) -> None:
    for state in ("approved", "resolved", "collecting", "escalated", "removed", "queued", ""):
        world.item(f"z-{state or 'blank'}", state=state)
    world.item("a-approved", state="approved")
    gone = world.item("b-deactivated", state="approved")
    Item.objects.filter(pk=gone.pk).update(deactivated_at=T0)

    release = release_create(project=world.project)

    assert [r["external_id"] for r in lines_of(release)] == [
        "a-approved",
        "z-approved",
        "z-resolved",
    ]
    assert release.row_count == 3 and release.version == 1


def test_every_field_of_a_consensus_row(world: World) -> None:
    item = world.item("a1", payload={"z": 1, "a": "two"}, split="train")
    world.label(item, "w4", "no_match", T0 + timedelta(days=9), state="voided")

    row = lines_of(release_create(project=world.project))[0]

    workers = [pseudonym(world.project, world.workers[w]) for w in ("w1", "w2", "w3")]
    assert row == {
        "external_id": "a1",
        "payload": {"a": "two", "z": 1},
        "label": "match",
        "label_source": "consensus",
        "confidence": 0.97,
        "n_labels": 3,
        "agreement": 1.0,
        "labellers": sorted(workers),
        "model_version": "m1",
        "probabilities": {"match": 0.6, "no_match": 0.4},
        "queued_reason": "near_threshold",
        "source": "production",
        "split": "train",
        "item_created_at": "2026-03-01T12:00:00.000000Z",
        "approved_at": "2026-03-01T15:00:00.000000Z",
    }
    assert list(row) == list(release_rows.FIELDS)


def test_expert_and_gold_rows_say_where_their_label_comes_from(world: World) -> None:
    resolved = world.item("e1", state="resolved", label="match")
    Escalation.objects.create(
        project=world.project,
        item=resolved,
        reason="low_confidence",
        resolved_at=T0 + timedelta(days=2),
        resolution="label",
        label="no_match",
    )
    # What the review service stores when an expert settles the item.
    Item.objects.filter(pk=resolved.pk).update(expert_label="no_match")
    world.item("g1", state="approved", label="no_match", gold="no_match")
    world.item("u1", state="approved", labellers=(), queued=False)
    Item.objects.filter(external_id="u1").update(gold_label="match", gold_set_at=T0)

    expert, gold, unlabelled = lines_of(release_create(project=world.project))

    assert (expert["label"], expert["label_source"]) == ("no_match", "expert")
    assert expert["approved_at"] == "2026-03-03T12:00:00.000000Z"
    assert (gold["label"], gold["label_source"]) == ("no_match", "gold")
    # No queue entry: the newest prediction; no labels: no consensus figures.
    assert unlabelled["model_version"] == "m2"
    assert unlabelled["probabilities"] == {"match": 0.55, "no_match": 0.45}
    assert (unlabelled["queued_reason"], unlabelled["confidence"], unlabelled["n_labels"]) == (
        None,
        None,
        0,
    )
    assert unlabelled["labellers"] == [] and unlabelled["label"] == "match"


def test_labels_and_rules_that_need_escaping_are_written_as_json_strings(
    make_project: Callable[..., Project],
) -> None:
    world = World(make_project(slug="quotes", labels=['say "yes"', "no\\way", "plain"]))
    world.item("a1", label='say "yes"')
    world.item("a2", label="no\\way")
    world.item("a3", label="plain")
    QueueEntry.objects.filter(item__external_id="a3").update(rule='odd "rule"')

    rows = lines_of(release_create(project=world.project))

    assert [(r["label"], r["queued_reason"]) for r in rows] == [
        ('say "yes"', "near_threshold"), ("no\\way", "near_threshold"), ("plain", 'odd "rule"'),
    ]  # fmt: skip


def test_pseudonyms_are_stable_per_project_and_differ_between_projects(
    world: World, make_project: Callable[..., Project]
) -> None:
    world.item("a1")
    first = lines_of(release_create(project=world.project))[0]["labellers"]
    second = lines_of(release_create(project=world.project))[0]["labellers"]
    other = World(make_project(slug="other"))
    other.item("a1")
    elsewhere = lines_of(release_create(project=other.project))[0]["labellers"]

    assert first == second
    assert not set(first) & set(elsewhere)
    assert all(len(p) == 16 and "w1" not in p for p in first)
    # The same labeller id gives another pseudonym in another project.
    assert release_rows.Pseudonyms(world.project)("7") != release_rows.Pseudonyms(other.project)(
        "7"
    )


@pytest.mark.needs_postgres
def test_labellers_looked_up_by_array_or_by_join_give_the_same_bytes(
    world: World, make_project: Callable[..., Project], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = World(make_project(slug="other"))
    names = [f"w{n}" for n in range(12)]
    for name in names:  # interleaved ids: each project's span has the other's labellers in it
        world.worker(name)
        other.worker(name)
    world.item("a1", labellers=tuple(names))
    world.item("a2", labellers=tuple(names[::3]))
    world.item("a3", labellers=(), queued=False)
    other.item("b1", labellers=tuple(names))
    world.label(Item.objects.get(external_id="a2"), "w1", "match", T0, state="voided")

    by_array = release_create(project=world.project)
    monkeypatch.setattr(pgcopy, "MAX_SPAN_PER_LABELLER", 0)
    monkeypatch.setattr(pgcopy, "MIN_SPAN", 0)
    by_join = release_create(project=world.project)

    assert data_of(by_array) == data_of(by_join)
    rows = lines_of(by_array)
    ours = {n: pseudonym(world.project, world.workers[n]) for n in names}
    assert rows[0]["labellers"] == sorted(ours.values())
    assert rows[1]["labellers"] == sorted(ours[n] for n in names[::3])
    assert rows[2]["labellers"] == [] and rows[2]["approved_at"] is None
    assert rows[0]["approved_at"] == "2026-03-02T00:00:00.000000Z"  # the 12th label, T0 + 12 h


# Manifest, sha256 and immutability


def test_the_manifest_holds_counts_checks_sha256_and_code_version(world: World) -> None:
    world.item("a1", label="match")
    world.item("a2", label="no_match")
    resolved = world.item("a3", state="resolved", label="match")
    Escalation.objects.create(
        project=world.project, item=resolved, reason="audit", resolved_at=T0,
        resolution="label", label="match",
    )  # fmt: skip
    Item.objects.filter(pk=resolved.pk).update(expert_label="match")

    release = release_create(project=world.project)
    folder = Path(release.location.removeprefix("file://"))
    manifest = json.loads((folder / "manifest.json").read_text())

    assert sorted(p.name for p in folder.iterdir()) == ["data.jsonl", "manifest.json"]
    assert manifest["version"] == 1 and manifest["row_count"] == 3
    assert manifest["class_counts"] == {"match": 2, "no_match": 1}
    assert manifest["label_source_counts"] == {"consensus": 2, "expert": 1}
    assert manifest["sha256"] == hashlib.sha256(data_of(release)).hexdigest() == release.sha256
    assert manifest["filters"] == {"since_last": False, "split": None, "source": None}
    assert [c["check"] for c in manifest["checks"]] == [
        "duplicate_content",
        "train_test_leakage",
        "class_drift",
        "payload_schema",
    ]
    assert all(c["passed"] for c in manifest["checks"]) and manifest["overrides"] == []
    assert manifest["code_version"] and manifest["code_version"] == release.code_version
    assert release.manifest == manifest


def test_unchanged_data_gives_the_same_sha256_and_bytes(world: World) -> None:
    for n in range(5):
        world.item(f"a{n}", label="match" if n % 2 else "no_match")
    first = release_create(project=world.project)
    Consensus.objects.update(computed_at=datetime.now(UTC))  # a recomputation changes nothing
    second = release_create(project=world.project)

    assert (first.version, second.version) == (1, 2)
    assert first.sha256 == second.sha256
    assert data_of(first) == data_of(second)


def test_changed_data_changes_the_sha256(world: World) -> None:
    world.item("a1")
    first = release_create(project=world.project)
    Consensus.objects.update(confidence=0.99)
    assert release_create(project=world.project).sha256 != first.sha256


def test_a_release_never_changes_and_the_next_export_is_a_new_version(world: World) -> None:
    world.item("a1")
    first = release_create(project=world.project)
    before = data_of(first)
    world.item("a2")

    with pytest.raises(Conflict):
        first.row_count = 99
        first.save()
    second = release_create(project=world.project)

    first.refresh_from_db()
    assert (first.row_count, data_of(first)) == (1, before)
    assert (second.version, second.row_count) == (2, 2)


# Filters


def test_filters_by_split_and_source(world: World) -> None:
    world.item("t1", split="train", source="web")
    world.item("t2", split="test", source="web")
    world.item("t3", split="train", source="batch")
    by_split = release_create(
        project=world.project, request=ReleaseRequest(filters=Filters(split="train"))
    )
    by_both = release_create(
        project=world.project, request=ReleaseRequest(filters=Filters(split="train", source="web"))
    )
    assert [r["external_id"] for r in lines_of(by_split)] == ["t1", "t3"]
    assert [r["external_id"] for r in lines_of(by_both)] == ["t1"]
    assert by_both.filters == {"since_last": False, "split": "train", "source": "web"}


def test_nothing_to_release_is_an_error_that_writes_nothing(world: World, exports: Path) -> None:
    world.item("a1", state="collecting")
    with pytest.raises(InvalidInput, match="nothing to release"):
        release_create(project=world.project)
    assert files_under(exports) == [] and not Release.objects.exists()


def test_a_bad_request_names_its_fields(world: World) -> None:
    with pytest.raises(InvalidInput) as raised:
        release_create(
            project=world.project,
            request=ReleaseRequest(fmt="xml", override_checks=("made_up",)),
        )
    assert {e.field for e in raised.value.errors} == {
        "format",
        "override_checks",
        "override_reason",
    }


# Formats


def test_csv_has_the_same_fields_with_json_cells(world: World) -> None:
    world.item("a1", payload={"text": 'a, "quoted"\nline'})
    release = release_create(project=world.project, request=ReleaseRequest(fmt="csv"))
    table = list(csv.DictReader(io.StringIO(data_of(release).decode())))
    assert list(table[0]) == list(release_rows.FIELDS)
    assert json.loads(table[0]["payload"]) == {"text": 'a, "quoted"\nline'}
    assert json.loads(table[0]["probabilities"]) == {"match": 0.6, "no_match": 0.4}
    assert (table[0]["label"], table[0]["confidence"], table[0]["n_labels"]) == (
        "match",
        "0.97",
        "3",
    )
    assert release.data_file == "data.csv"


def test_manifest_format_writes_ground_truth_output_lines(world: World) -> None:
    world.item("a1", label="no_match")
    release = release_create(project=world.project, request=ReleaseRequest(fmt="manifest"))
    line = lines_of(release)[0]
    assert line["source"] == {"text": "content of a1"}
    assert line["external-id"] == "a1"
    assert line["pet-match"] == 1
    metadata = line["pet-match-metadata"]
    assert metadata["class-name"] == "no_match" and metadata["confidence"] == 0.97
    assert metadata["human-annotated"] == "yes" and metadata["job-name"] == "labeling-job/pet-match"
    assert metadata["type"] == "groundtruth/text-classification"
    assert metadata["creation-date"] == "2026-03-01T15:00:00.000000Z"


# Data checks


def blocked(world: World, exports: Path, **request: Any) -> ChecksFailed:
    """Run a release that the checks must block; check that it left nothing behind."""
    count = Release.objects.count()
    with pytest.raises(ChecksFailed) as raised:
        release_create(project=world.project, request=ReleaseRequest(**request))
    assert Release.objects.count() == count
    assert files_under(exports / ".staging") == []
    return raised.value


def failed(error: ChecksFailed) -> list[str]:
    return [r.check for r in error.results if not r.passed]


def test_duplicate_content_blocks_and_can_be_overridden(world: World, exports: Path) -> None:
    world.item("a1", payload={"text": "same"})
    world.item("a2", payload={"text": "same"})
    world.item("a3")
    error = blocked(world, exports)
    assert failed(error) == ["duplicate_content"]
    assert error.results[0].details == {"groups": 1, "extra_rows": 1, "examples": [["a1", "a2"]]}
    assert files_under(exports) == []

    release = release_create(
        project=world.project,
        request=ReleaseRequest(override_reason="the duplicates are two real customers"),
    )
    assert release.overrides == [
        {
            "check": "duplicate_content",
            "reason": "the duplicates are two real customers",
            "by": "command line",
        }
    ]
    assert release.manifest["checks"][0]["overridden"] is True
    assert release.row_count == 3


def test_train_test_leakage_blocks_and_can_be_overridden(world: World, exports: Path) -> None:
    world.item("a1", payload={"text": "leaky"}, split="train")
    world.item("b1", payload={"text": "leaky"}, split="test", state="collecting")
    world.item("c1", split="test")
    error = blocked(world, exports)
    assert failed(error) == ["train_test_leakage"]
    assert error.results[1].details["examples"] == [
        {"external_id": "a1", "split": "train", "also": "b1", "also_split": "test"}
    ]
    release = release_create(
        project=world.project,
        request=ReleaseRequest(override_reason="known", override_checks=("train_test_leakage",)),
    )
    assert [o["check"] for o in release.overrides] == ["train_test_leakage"]


@pytest.mark.needs_postgres
@pytest.mark.parametrize("key", [checks.CONTENT_KEY, "0::bigint"])  # every content one key
def test_the_content_pass_finds_what_the_two_checks_find_on_their_own(
    world: World, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    monkeypatch.setattr(checks, "CONTENT_KEY", key)
    world.item("a1", payload={"text": "twice"})
    world.item("a2", payload={"text": "twice"})
    world.item("b1", payload={"text": "leaky"}, split="train")
    world.item("b2", payload={"text": "leaky"}, split="test", state="collecting")
    world.item("c1", payload={"text": "no split"})  # not a leak: no split of its own
    world.item("c2", payload={"text": "no split"}, split="test", state="collecting")
    world.item("d1", payload={"text": "one split"}, split="train")
    world.item("d2", payload={"text": "one split"}, split="train", state="collecting")
    world.item("e1", payload={"text": "gone"}, split="train")
    gone = world.item("e2", payload={"text": "gone"}, split="test")
    gone.deactivated_at = timezone.now()
    gone.save()
    world.item("f1", split="test")
    chosen = release_rows.selection(world.project, Filters(), None)

    combined = checks.content_checks(world.project.pk, chosen)
    alone = (checks.duplicate_content(chosen), checks.train_test_leakage(chosen))
    assert [r.as_dict() for r in combined] == [r.as_dict() for r in alone]
    assert combined[0].details["examples"] == [["a1", "a2"]]
    assert [e["external_id"] for e in combined[1].details["examples"]] == ["b1"]


@pytest.mark.needs_postgres
def test_the_content_pass_of_a_clean_project_passes_both_checks(world: World) -> None:
    world.item("a1", split="train")
    world.item("a2", split="test")
    world.item("a3", payload={"text": "content of a1"}, split="train", state="collecting")
    chosen = release_rows.selection(world.project, Filters(), None)
    combined = checks.content_checks(world.project.pk, chosen)
    alone = (checks.duplicate_content(chosen), checks.train_test_leakage(chosen))
    assert [r.as_dict() for r in combined] == [r.as_dict() for r in alone]
    assert [r.passed for r in combined] == [True, True]


def test_class_drift_beyond_the_bound_blocks_and_can_be_overridden(
    world: World, exports: Path
) -> None:
    for n in range(4):
        world.item(f"a{n}", label="match" if n < 2 else "no_match")
    release_create(project=world.project)
    for n in range(4, 10):
        world.item(f"a{n}", label="match")  # 8 of 10 match now: moved by 0.3

    error = blocked(world, exports)
    drift = next(r for r in error.results if r.check == "class_drift")
    assert failed(error) == ["class_drift"]
    assert drift.details["distance"] == pytest.approx(0.3)
    assert drift.details["bound"] == 0.1 and drift.details["compared_with"] == 1

    world.project.release_max_class_drift = 0.5
    world.project.save()
    assert release_create(project=world.project).version == 2


def test_class_drift_compares_with_the_last_release_of_the_same_split(world: World) -> None:
    world.item("t1", split="test", label="match")
    world.item("t2", split="test", label="no_match")
    release_create(project=world.project, request=ReleaseRequest(filters=Filters(split="test")))
    world.item("x1", split="train", label="match")
    world.item("x2", split="train", label="match")
    train = release_create(
        project=world.project, request=ReleaseRequest(filters=Filters(split="train"))
    )
    assert train.checks[2]["message"] == "no earlier release to compare with"


def test_payload_schema_problems_block_and_can_be_overridden(world: World, exports: Path) -> None:
    world.project.schema = {
        "age": {"type": "number", "min": 0, "max": 120},
        "name": {"type": "string"},
        "note": {"type": "string", "required": False},
    }
    world.project.save()
    world.item("a1", payload={"age": 30, "name": "Ann"})
    world.item("a2", payload={"age": None, "name": "Bob"})
    world.item("a3", payload={"age": 200, "name": "Cy", "note": None})
    world.item("a4", payload={"age": -1})
    world.item("a5", payload={"age": "old", "name": 5})

    error = blocked(world, exports)
    schema = error.results[-1]
    assert failed(error) == ["payload_schema"]
    assert schema.details["problems"] == [
        {"field": "age", "problem": "above_max", "rows": 1, "examples": ["a3"]},
        {"field": "age", "problem": "below_min", "rows": 1, "examples": ["a4"]},
        {"field": "age", "problem": "null", "rows": 1, "examples": ["a2"]},
        {"field": "age", "problem": "wrong_type", "rows": 1, "examples": ["a5"]},
        {"field": "name", "problem": "missing", "rows": 1, "examples": ["a4"]},
        {"field": "name", "problem": "wrong_type", "rows": 1, "examples": ["a5"]},
    ]
    release = release_create(
        project=world.project, request=ReleaseRequest(override_reason="legacy rows, fixed in v2")
    )
    assert release.overrides[0]["check"] == "payload_schema"


def test_an_override_of_other_checks_does_not_unblock(world: World, exports: Path) -> None:
    world.item("a1", payload={"text": "same"})
    world.item("a2", payload={"text": "same"})
    error = blocked(
        world, exports, override_reason="not this one", override_checks=("class_drift",)
    )
    assert failed(error) == ["duplicate_content"]
    assert "duplicate_content: FAILED" in error.report()


def test_the_project_spec_takes_a_schema_and_a_drift_bound(
    make_project: Callable[..., Project],
) -> None:
    project = make_project(
        schema={"age": {"type": "integer", "min": 0, "required": True}},
        release={"max_class_drift": 0.25},
    )
    assert project.schema == {"age": {"type": "integer", "min": 0, "required": True}}
    assert project.release_max_class_drift == 0.25
    with pytest.raises(InvalidInput) as raised:
        parse_spec(
            {
                "slug": "x",
                "labels": ["a", "b"],
                "schema": {"age": {"type": "date", "min": "low", "size": 1}, "b": 3},
                "release": {"max_class_drift": 2},
            }
        )
    assert {e.field for e in raised.value.errors} == {
        "schema.age.type",
        "schema.age.min",
        "schema.age.size",
        "schema.b",
        "release.max_class_drift",
    }


# The job, and a failure midway


def test_a_job_that_fails_midway_leaves_nothing_behind(
    world: World,
    exports: Path,
    engineer_api: APIClient,
    eager_jobs: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for n in range(5):
        world.item(f"a{n}")
    staged: list[int] = []

    def look() -> None:
        staged.extend(p.stat().st_size for p in files_under(exports / ".staging"))

    fail_after_first_chunk(monkeypatch, OSError("disk full"), look)
    with django_capture_on_commit_callbacks(execute=True):
        response = engineer_api.post("/api/v1/projects/pet-match/releases", {}, format="json")

    job = Job.objects.get(pk=response.json()["id"])
    assert (job.status, job.error["code"]) == ("failed", "internal_error")
    assert staged  # it failed with the data file begun
    assert not Release.objects.exists()
    assert files_under(exports) == []


def test_the_api_freezes_a_release_as_a_job_and_serves_it(
    world: World,
    engineer_api: APIClient,
    eager_jobs: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    world.item("a1")
    world.item("a2", split="test")
    with django_capture_on_commit_callbacks(execute=True):
        response = engineer_api.post(
            "/api/v1/projects/pet-match/releases", {"format": "csv", "split": "test"}, format="json"
        )
    assert response.status_code == 202 and response.json()["kind"] == "release"

    job = engineer_api.get(response.json()["url"]).json()
    assert (job["status"], job["progress"]) == ("succeeded", 1.0)
    assert job["result"]["version"] == 1 and job["result"]["row_count"] == 1
    detail = engineer_api.get(job["result"]["url"]).json()
    assert detail["manifest"]["filters"]["split"] == "test"
    assert detail["sha256"] == job["result"]["sha256"]
    assert detail["download_url"].endswith(f"/api/v1/releases/{detail['id']}/download")

    download = engineer_api.get(detail["download_url"])
    body = b"".join(download.streaming_content)
    assert download.status_code == 200 and download["Content-Type"].startswith("text/csv")
    assert hashlib.sha256(body).hexdigest() == detail["sha256"]
    assert 'filename="pet-match-v1.csv"' in download["Content-Disposition"]
    listed = engineer_api.get("/api/v1/projects/pet-match/releases").json()
    assert [r["version"] for r in listed] == [1]


def test_a_blocked_job_reports_the_checks(
    world: World,
    engineer_api: APIClient,
    eager_jobs: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    world.item("a1", payload={"text": "same"})
    world.item("a2", payload={"text": "same"})
    with django_capture_on_commit_callbacks(execute=True):
        response = engineer_api.post("/api/v1/projects/pet-match/releases", {}, format="json")
    job = engineer_api.get(response.json()["url"]).json()
    assert job["status"] == "failed" and job["error"]["code"] == "checks_failed"
    assert [c["check"] for c in job["error"]["checks"] if not c["passed"]] == ["duplicate_content"]
    with django_capture_on_commit_callbacks(execute=True):
        response = engineer_api.post(
            "/api/v1/projects/pet-match/releases", {"override_reason": "fine"}, format="json"
        )
    assert engineer_api.get(response.json()["url"]).json()["status"] == "succeeded"
    assert Release.objects.get().overrides[0]["by"] == "erin-engineer"


def test_bad_release_requests_are_refused_with_the_field(engineer_api: APIClient) -> None:
    response = engineer_api.post(
        "/api/v1/projects/pet-match/releases",
        {"format": "xml", "override_checks": ["class_drift"]},
        format="json",
    )
    assert response.status_code == 400
    assert [e["field"] for e in response.json()["errors"]] == ["format"]
    response = engineer_api.post(
        "/api/v1/projects/pet-match/releases", {"override_checks": ["class_drift"]}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "override_reason"
    assert not Job.objects.exists()


def test_releases_are_for_the_projects_engineers_only(
    world: World,
    make_project: Callable[..., Project],
    client_for: Callable[..., APIClient],
    crowd_api: APIClient,
    expert_api: APIClient,
) -> None:
    world.item("a1")
    release = release_create(project=world.project)
    stranger = client_for(make_project(slug="elsewhere"), "otto-other", Role.ENGINEER)
    paths = [
        f"/api/v1/releases/{release.pk}",
        f"/api/v1/releases/{release.pk}/download",
        "/api/v1/projects/pet-match/releases",
    ]
    for path in paths:
        assert crowd_api.get(path).status_code == 403
        assert expert_api.get(path).status_code == 403
        assert stranger.get(path).status_code == 404
        assert APIClient().get(path).status_code in (401, 403)
    for client, code in ((crowd_api, 403), (expert_api, 403), (stranger, 404)):
        assert client.post(paths[2], {}, format="json").status_code == code
    assert not Job.objects.exists()


def test_there_is_no_way_to_change_or_delete_a_release_through_the_api(
    world: World, engineer_api: APIClient
) -> None:
    world.item("a1")
    release = release_create(project=world.project)
    path = f"/api/v1/releases/{release.pk}"
    assert engineer_api.patch(path, {"row_count": 9}, format="json").status_code == 405
    assert engineer_api.put(path, {"row_count": 9}, format="json").status_code == 405
    assert engineer_api.delete(path).status_code == 405
    assert Release.objects.get().row_count == 1


def test_a_missing_data_file_is_a_404_not_a_broken_stream(
    world: World, engineer_api: APIClient
) -> None:
    world.item("a1")
    release = release_create(project=world.project)
    (Path(release.location.removeprefix("file://")) / release.data_file).unlink()
    assert engineer_api.get(f"/api/v1/releases/{release.pk}/download").status_code == 404


# The page


@pytest.fixture
def browser_for(db: None) -> Callable[[Project, str, Role], Client]:
    def make(project: Project, username: str, role: Role) -> Client:
        labeller, _ = labeller_create(project=project, username=username, role=role)
        client = Client()
        client.force_login(labeller.user)
        return client

    return make


def test_the_releases_page_shows_releases_checks_and_builds_one(
    world: World,
    browser_for: Callable[..., Client],
    eager_jobs: None,
    django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks,
) -> None:
    world.item("a1", payload={"text": "same"})
    world.item("a2", payload={"text": "same"})
    page = browser_for(world.project, "erin-engineer", Role.ENGINEER)
    with django_capture_on_commit_callbacks(execute=True):
        response = page.post("/projects/pet-match/releases/", {"format": "jsonl"})
    assert response.status_code == 302
    html = page.get("/projects/pet-match/releases/").content.decode()
    assert "data checks failed: duplicate_content" in html and "No release yet." in html

    with django_capture_on_commit_callbacks(execute=True):
        page.post(
            "/projects/pet-match/releases/",
            {"format": "jsonl", "override_reason": "two real customers"},
        )
    html = page.get("/projects/pet-match/releases/").content.decode()
    release = Release.objects.get()
    assert "v1" in html and release.sha256 in html
    assert "overridden by erin-engineer: two real customers" in html
    assert f"/api/v1/releases/{release.pk}/download" in html
    assert "v1" in page.get("/projects/pet-match/").content.decode()


def test_the_releases_page_refuses_bad_input_and_strangers(
    world: World, browser_for: Callable[..., Client], make_project: Callable[..., Project]
) -> None:
    page = browser_for(world.project, "erin-engineer", Role.ENGINEER)
    response = page.post(
        "/projects/pet-match/releases/", {"format": "xml", "override_checks": ["class_drift"]}
    )
    assert response.status_code == 200 and not Job.objects.exists()
    assert "xml" in response.content.decode()
    crowd = browser_for(world.project, "cora-crowd", Role.CROWD)
    assert crowd.get("/projects/pet-match/releases/").status_code == 403
    stranger = browser_for(make_project(slug="elsewhere"), "otto-other", Role.ENGINEER)
    assert stranger.get("/projects/pet-match/releases/").status_code == 404


# The command


def test_export_release_prints_version_rows_and_sha256(world: World, tmp_path: Path) -> None:
    world.item("a1")
    out = io.StringIO()
    call_command(
        "export_release",
        "pet-match",
        "--format",
        "manifest",
        "--out",
        str(tmp_path / "o"),
        stdout=out,
    )
    release = Release.objects.get()
    assert out.getvalue().splitlines()[0] == f"release v1: 1 rows, sha256 {release.sha256}"
    assert (tmp_path / "o" / "pet-match" / "v1" / "data.manifest").is_file()
    assert (tmp_path / "o" / "pet-match" / "v1" / "manifest.json").is_file()


def test_export_release_exits_1_with_the_check_report_and_obeys_overrides(world: World) -> None:
    world.item("a1", payload={"text": "same"}, split="train")
    world.item("a2", payload={"text": "same"}, split="train")
    with pytest.raises(CommandError) as raised:
        call_command("export_release", "pet-match", stdout=io.StringIO())
    assert raised.value.returncode == 1
    assert "duplicate_content: FAILED" in str(raised.value)
    out = io.StringIO()
    call_command(
        "export_release", "pet-match", "--split", "train", "--override-checks", "ok", stdout=out
    )
    assert "duplicate_content: overridden" in out.getvalue()
    with pytest.raises(CommandError, match="no project"):
        call_command("export_release", "nope", stdout=io.StringIO())


def iterate(chunks: Iterator[bytes]) -> bytes:
    return b"".join(chunks)
