"""How consensus loads labels and stores its outcome: set-based, and as the ORM would store it."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np
import pytest
from django.db import connection

from labelling.models import Consensus, Escalation, Item, Label, Labeller, Project, QueueEntry
from labelling.policy import parse_policy
from labelling.services import consensus
from labelling.services.consensus import consensus_compute, state_counts
from labelling.services.gold import gold_import
from labelling.services.imports import predictions_import
from labelling.services.labels import labels_import
from labelling.services.queueing import queue_select

pytestmark = pytest.mark.django_db


def load(project: Project, answers: dict[str, dict[str, str]]) -> None:
    lines = [
        json.dumps({"external_id": item, "labeller": who, "label": label, "duration_ms": 900})
        for item, by in answers.items()
        for who, label in by.items()
    ]
    labels_import(project=project, stream=io.BytesIO("\n".join(lines).encode()), fmt="jsonl")


def predict_and_queue(project: Project, external_ids: list[str]) -> None:
    rows = [
        json.dumps(
            {
                "external_id": e,
                "payload": {"e": e},
                "model_version": "m",
                "probabilities": {"match": 0.5, "no_match": 0.5},
            }
        )
        for e in external_ids
    ]
    stream = io.BytesIO("\n".join(rows).encode())
    predictions_import(project=project, stream=stream, fmt="jsonl")
    queue_select(
        project=project, policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]})
    )


def test_rounding_matches_pythons_round_exactly() -> None:
    rng = np.random.default_rng(1)
    near_half = (np.arange(1, 20_001) + 0.5) / 1e6 + rng.normal(0, 1e-16, 20_000)
    values = np.concatenate([rng.random(200_000), near_half, [0.0, 1.0, 0.0078125, 1e-7]])

    rounded = consensus._rounded(values)

    assert rounded.tolist() == [round(float(v), 6) for v in values]


def test_the_posterior_is_stored_as_the_json_field_would_store_it(project: Project) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match", "w3": "no_match"}})
    gold_import(
        project=project, stream=io.BytesIO(b'{"external_id": "a1", "label": "match"}'), fmt="jsonl"
    )

    consensus_compute(project=project)

    stored = Consensus.objects.get()
    assert stored.posterior == [1.0, 0.0]
    assert [type(p) for p in stored.posterior] == [float, float]
    with connection.cursor() as cursor:
        cursor.execute("SELECT posterior FROM labelling_consensus")
        raw = cursor.fetchone()[0]
    assert (raw if isinstance(raw, str) else json.dumps(raw)) == "[1.0, 0.0]"


def test_labels_with_characters_copy_escapes_are_stored_as_they_are(
    make_project: Callable[..., Project],
) -> None:
    project = make_project(slug="odd", labels=["back\\slash", "tab\tbed", 'quote"d'])
    load(project, {"a1": {"w1": "tab\tbed", "w2": "tab\tbed"}, "a2": {"w1": 'quote"d'}})

    consensus_compute(project=project)

    stored = dict(Consensus.objects.values_list("item__external_id", "label"))
    assert stored == {"a1": "tab\tbed", "a2": 'quote"d'}


def test_a_recomputation_updates_the_consensus_rows_in_place(project: Project) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match"}, "a2": {"w1": "no_match"}})
    consensus_compute(project=project)
    first = dict(Consensus.objects.values_list("item__external_id", "pk"))
    before = Consensus.objects.get(item__external_id="a2").computed_at
    load(project, {"a2": {"w2": "match", "w3": "match"}})

    consensus_compute(project=project)

    assert dict(Consensus.objects.values_list("item__external_id", "pk")) == first
    again = Consensus.objects.get(item__external_id="a2")
    assert (again.n_labels, again.label) == (3, "match")
    assert again.computed_at > before
    assert Consensus.objects.values("computed_at").distinct().count() == 1


def test_decided_items_keep_their_state_and_stop_collecting(project: Project) -> None:
    predict_and_queue(project, ["a1", "a2"])
    load(project, {"a1": {"w1": "match"}, "a2": {"w1": "match"}})
    Item.objects.filter(external_id="a1").update(state="resolved")

    report = consensus_compute(project=project)

    assert dict(Item.objects.values_list("external_id", "state")) == {
        "a1": "resolved",
        "a2": "collecting",
    }
    assert dict(QueueEntry.objects.values_list("item__external_id", "collecting")) == {
        "a1": False,
        "a2": True,
    }
    assert report.items["a1"]["state"] == "resolved"
    assert not Escalation.objects.exists()


def test_queued_items_without_labels_are_in_the_report_in_id_order(project: Project) -> None:
    predict_and_queue(project, ["q3", "q1", "q2"])
    load(project, {"q1": {"w1": "match"}})

    report = consensus_compute(project=project)

    assert len(report.items) == 3
    assert list(report.items) == ["q1", "q3", "q2"]
    assert report.items["q3"] == {
        "label": None,
        "confidence": None,
        "state": "queued",
        "n_labels": 0,
    }
    assert report.as_dict()["items"] == dict(report.items)


def test_a_labelled_item_outside_labelling_is_aggregated_too(project: Project) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match", "w3": "match"}})
    # Not reachable through the services, but the data may say so: labels on a blank item.
    Item.objects.filter(external_id="a1").update(state="")

    report = consensus_compute(project=project)

    assert report.items["a1"]["state"] == "approved"
    assert Item.objects.get(external_id="a1").state == "approved"


def test_the_loaded_arrays_follow_the_label_ids(project: Project) -> None:
    load(project, {"b": {"w2": "no_match", "w1": "match"}, "a": {"w1": "no_match"}})

    arrays = consensus._load(project)

    labels = Label.objects.order_by("pk")
    assert arrays.item_ids[arrays.items].tolist() == list(labels.values_list("item_id", flat=True))
    assert arrays.labeller_ids[arrays.workers].tolist() == list(
        labels.values_list("labeller_id", flat=True)
    )
    codes = [project.labels.index(v) for v in labels.values_list("value", flat=True)]
    assert arrays.labels.tolist() == codes
    assert arrays.durations.tolist() == [900.0] * 3


def test_labeller_figures_and_pauses_are_stored(project: Project) -> None:
    answers = {f"i{k}": {"steady": "match", "flip": "no_match"} for k in range(30)}
    load(project, answers)
    Labeller.objects.filter(worker_id="flip").update(status="blocked")

    report = consensus_compute(project=project)

    steady = Labeller.objects.get(worker_id="steady")
    assert steady.n_labels == 30 and steady.reliability_at is not None
    assert report.labellers["steady"]["n_labels"] == 30
    assert Labeller.objects.get(worker_id="flip").status == "blocked"


def test_state_counts_counts_items_in_labelling(project: Project) -> None:
    load(project, {"a1": {"w1": "match", "w2": "match", "w3": "match"}, "a2": {"w1": "match"}})
    Item.objects.create(
        project=project, external_id="idle", content_hash="x", created_at="2026-01-01T00:00Z"
    )

    consensus_compute(project=project)

    assert state_counts(project) == {"approved": 2}


@pytest.mark.needs_postgres
def test_consensus_and_the_prediction_import_share_a_session(project: Project) -> None:
    # Both use temporary tables; PostgreSQL fixes their buffer size at the session's first one.
    load(project, {"a1": {"w1": "match"}})
    consensus_compute(project=project)

    predict_and_queue(project, ["p1"])
    consensus_compute(project=project)

    assert Consensus.objects.count() == 1
    assert Item.objects.get(external_id="p1").state == "queued"


@pytest.mark.needs_postgres
def test_the_packed_integer_load_equals_a_plain_fetch(project: Project) -> None:
    load(project, {f"i{k}": {f"w{k % 7}": "match", "w9": "no_match"} for k in range(50)})
    sql = "SELECT id, item_id, labeller_id FROM labelling_label WHERE project_id = %s"

    packed = consensus._integer_rows(sql, [project.pk], 3)

    with connection.cursor() as cursor:
        cursor.execute(sql, [project.pk])
        plain = np.array(cursor.fetchall(), np.int64)
    assert packed.dtype == np.int64
    assert packed.tolist() == plain.tolist()
    assert consensus._integer_rows(sql, [-1], 3).shape == (0, 3)


def test_a_project_without_labels_gets_an_empty_report(project: Project) -> None:
    report = consensus_compute(project=project)

    assert (len(report.items), report.labellers, report.agreement) == (0, {}, {})
    assert not Consensus.objects.exists()
