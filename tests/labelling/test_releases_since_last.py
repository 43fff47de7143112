"""Releases "since the last release": the items whose decision changed since, through the real
services (labels, consensus, labeller rejection, expert review, gold), each exactly once."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, transaction
from pytest_django import Settings

from core.exceptions import InvalidInput
from core.permissions import Role
from labelling.models import Escalation, Item, Label, Labeller, Project, Release
from labelling.releases.rows import Filters
from labelling.services.consensus import consensus_compute
from labelling.services.decisions import decision_time
from labelling.services.gold import gold_import
from labelling.services.labellers import labeller_create, labeller_reject
from labelling.services.labels import labels_import
from labelling.services.releases import ReleaseRequest, release_create
from labelling.services.review import Decision, escalation_resolve
from tests.labelling.test_review import predict

SINCE_LAST = ReleaseRequest(filters=Filters(since_last=True))


@pytest.fixture(autouse=True)
def exports(settings: Settings, tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    settings.EXPORT_STORAGE = folder.as_uri()
    return folder


@pytest.fixture
def voting(make_project: Callable[..., Project]) -> Project:
    """Two agreeing labels approve an item (vote shares: 0.94); a 2–1 split at the maximum of
    three labels (0.8) goes to an expert. Small releases swing: drift is not checked here."""
    return make_project(
        overlap={"min": 2, "max": 3, "target_confidence": 0.9},
        escalation={"below_confidence": 0.85, "audit_fraction": 0},
        release={"max_class_drift": 1},
    )


def label(project: Project, answers: dict[str, dict[str, str]]) -> None:
    """Labels by named labellers ({item: {labeller: label}}), then consensus."""
    rows = [
        json.dumps({"external_id": key, "labeller": who, "label": value})
        for key, by in answers.items()
        for who, value in by.items()
    ]
    labels_import(project=project, stream=io.BytesIO("\n".join(rows).encode()), fmt="jsonl")
    consensus_compute(project=project)


def released(release: Release) -> dict[str, str]:
    data = (Path(release.location.removeprefix("file://")) / release.data_file).read_bytes()
    return {row["external_id"]: row["label"] for row in map(json.loads, data.splitlines())}


def expert(project: Project) -> Any:
    labeller, _ = labeller_create(project=project, username="ezra-expert", role=Role.EXPERT)
    return labeller.user


def test_since_last_takes_the_items_decided_since_and_no_unchanged_item_twice(
    voting: Project,
) -> None:
    predict(voting, {key: 0.6 for key in "abcdef"})
    label(voting, {
        "a": {"u1": "match", "u2": "match"},
        "b": {"u1": "match", "bad": "no_match", "u2": "match"},
        "c": {"u1": "match", "u2": "match"},
        "d": {"u1": "match", "u2": "no_match", "u3": "match"},
        "e": {"u1": "no_match", "u2": "no_match"},
    })  # fmt: skip
    states = dict(Item.objects.values_list("external_id", "state"))
    assert [states[k] for k in "abcde"] == ["approved", "escalated", "approved", "escalated",
                                           "approved"]  # fmt: skip
    first = release_create(project=voting)
    assert released(first) == {"a": "match", "c": "match", "e": "no_match"}
    valid = Label.objects.filter(state="valid").count()

    # b: approved by the recomputation after its dissenter is rejected, with no new label.
    labeller_reject(labeller=Labeller.objects.get(worker_id="bad"), user=None, reason="random")
    assert Label.objects.filter(state="valid").count() == valid - 1
    # c: four later labels turn the consensus while the item stays approved.
    label(voting, {"c": {f"v{n}": "no_match" for n in range(4)}})
    # d: an expert's decision; e: a gold answer that differs from the crowd's.
    escalation = Escalation.objects.get(item__external_id="d", resolved_at__isnull=True)
    escalation_resolve(
        escalation_id=escalation.pk, user=expert(voting), decision=Decision("label", "no_match")
    )
    gold_import(project=voting, stream=io.BytesIO(b'{"external_id": "e", "label": "match"}'),
                fmt="jsonl")  # fmt: skip
    second = release_create(project=voting, request=SINCE_LAST)

    assert released(second) == {"b": "match", "c": "no_match", "d": "no_match", "e": "match"}

    # A recomputation that changes no decision puts nothing in the next one; a new approval does.
    Item.objects.filter(external_id="e").update(gold_label="")  # the crowd agrees again
    consensus_compute(project=voting)
    with pytest.raises(InvalidInput, match="nothing to release"):
        release_create(project=voting, request=SINCE_LAST)
    label(voting, {"f": {"u1": "match", "u2": "match"}})
    assert released(release_create(project=voting, request=SINCE_LAST)) == {"f": "match"}


def test_an_item_decided_back_to_its_released_label_after_a_new_round_is_released_again(
    voting: Project,
) -> None:
    predict(voting, {"a": 0.6})
    label(voting, {"a": {"u1": "match", "bad": "match"}})
    release_create(project=voting)
    labeller_reject(labeller=Labeller.objects.get(worker_id="bad"), user=None)
    assert Item.objects.get().state == "collecting"
    label(voting, {"a": {"u2": "match"}})

    # A new decision (other labellers, other figures), though with the label already released.
    assert released(release_create(project=voting, request=SINCE_LAST)) == {"a": "match"}


def test_the_first_since_last_release_takes_everything_decided(voting: Project) -> None:
    predict(voting, {"a": 0.6, "b": 0.6})
    label(voting, {"a": {"u1": "match", "u2": "match"}, "b": {"u1": "no_match"}})
    assert released(release_create(project=voting, request=SINCE_LAST)) == {"a": "match"}


@pytest.mark.needs_postgres
@pytest.mark.django_db(transaction=True)
def test_a_release_waits_for_a_decision_in_flight_so_the_next_one_cannot_miss_it(
    voting: Project, tmp_path: Path
) -> None:
    predict(voting, {"a": 0.6, "b": 0.6})
    label(voting, {"a": {"u1": "match", "u2": "match"}})
    decided, finish = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def decide() -> None:
        # A decision whose transaction is still open when the release starts.
        try:
            with transaction.atomic():
                at = decision_time(project_id=voting.pk)
                Item.objects.filter(external_id="b").update(state="approved", decided_at=at)
                decided.set()
                finish.wait(10)
                time.sleep(0.5)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    worker = threading.Thread(target=decide)
    worker.start()
    assert decided.wait(10)
    finish.set()
    started = datetime.now(UTC)
    first = release_create(project=voting)
    worker.join(10)

    assert not errors
    # It waited for the decision to commit, so it holds b, and the next holds nothing twice.
    assert (datetime.now(UTC) - started).total_seconds() >= 0.4
    assert released(first) == {"a": "match", "b": ""}
    with pytest.raises(InvalidInput, match="nothing to release"):
        release_create(project=voting, request=SINCE_LAST)
