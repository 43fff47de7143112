"""Expert review: the escalation queue and its priority, audits, leasing escalations to experts,
the expert's final decisions and what they change, and the review API for every role."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import numpy as np
import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from core.exceptions import Conflict, InvalidInput
from core.permissions import Role
from labelling.models import Escalation, Item, Labeller, Project, QueueEntry
from labelling.numerics.priority import audit_draw, escalation_priority
from labelling.policy import parse_policy
from labelling.review import escalation_evidence, escalation_queue, review_statistics
from labelling.services.consensus import consensus_compute
from labelling.services.imports import predictions_import
from labelling.services.labellers import labeller_create
from labelling.services.labels import labels_import
from labelling.services.queueing import queue_select
from labelling.services.review import Decision, escalation_lease, escalation_resolve

pytestmark = pytest.mark.django_db
User = get_user_model()


def predict(project: Project, confidences: dict[str, float]) -> None:
    """Predictions of p(match) for items, all queued."""
    rows = "\n".join(
        json.dumps(
            {
                "external_id": key,
                "payload": {"text": f"text of {key}"},
                "model_version": "m1",
                "probabilities": {"match": p, "no_match": round(1 - p, 6)},
            }
        )
        for key, p in confidences.items()
    )
    predictions_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")
    queue_select(
        project=project, policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]})
    )


def crowd(project: Project, answers: dict[str, list[str]]) -> None:
    """Labels from workers w0, w1, … for each item, then consensus."""
    rows = [
        json.dumps({"external_id": key, "labeller": f"w{i}", "label": label})
        for key, labels in answers.items()
        for i, label in enumerate(labels)
    ]
    labels_import(project=project, stream=io.BytesIO("\n".join(rows).encode()), fmt="jsonl")
    consensus_compute(project=project)


@pytest.fixture
def split(make_project: Callable[..., Project]) -> Project:
    """Three items the crowd split on (two labels each, at the maximum), no audits."""
    project = make_project(
        overlap={"min": 2, "max": 2, "target_confidence": 0.95},
        escalation={"below_confidence": 0.9, "audit_fraction": 0},
    )
    predict(project, {"a": 0.55, "b": 0.9, "c": 0.7})
    crowd(project, {k: ["match", "no_match"] for k in "abc"})
    return project


def user(project: Project, name: str, role: Role = Role.EXPERT) -> object:
    labeller, _ = labeller_create(project=project, username=name, role=role)
    return labeller.user


# ---- priority and the queue ----


def test_priority_grows_with_model_uncertainty_disagreement_and_harm() -> None:
    posterior = np.array([[0.5, 0.5], [0.5, 0.5], [0.5, 0.5], [0.9, 0.1]])
    model = np.array([0.55, 0.95, 0.55, 0.55])
    agreement = np.array([0.0, 0.0, 1.0, 0.0])
    crowd_conf = posterior.max(axis=1)

    plain = escalation_priority(model, agreement, crowd_conf, posterior, np.array([1.0, 1.0]))
    harmful = escalation_priority(model, agreement, crowd_conf, posterior, np.array([5.0, 1.0]))

    assert plain[0] > plain[1] and plain[0] > plain[2]
    assert harmful[3] > plain[3] and harmful[0] == pytest.approx(3 * plain[0])
    no_model = escalation_priority(
        np.array([np.nan]), np.array([np.nan]), np.array([0.5]), posterior[:1], np.ones(2)
    )
    assert no_model[0] == pytest.approx(1.0)


def test_the_queue_puts_the_model_s_least_sure_item_first(split: Project) -> None:
    order = [e.item.external_id for e in escalation_queue(split)]

    assert order == ["a", "c", "b"]
    assert all(e.reason == "low_confidence" for e in escalation_queue(split))


def test_the_harm_weight_of_a_label_raises_its_items(make_project: Callable[..., Project]) -> None:
    project = make_project(
        overlap={"min": 3, "max": 3, "target_confidence": 0.99},
        escalation={"below_confidence": 0.99, "audit_fraction": 0, "harm_weights": {"match": 9}},
    )
    predict(project, {"m": 0.6, "n": 0.6})
    crowd(project, {"m": ["match", "match", "no_match"], "n": ["no_match", "no_match", "match"]})

    first, second = escalation_queue(project)

    assert (first.item.external_id, second.item.external_id) == ("m", "n")
    assert first.priority > 2 * second.priority


def test_audits_sample_the_fraction_of_approved_items_the_same_way_every_time(
    make_project: Callable[..., Project],
) -> None:
    project = make_project(
        overlap={"min": 1, "max": 1, "target_confidence": 0.5},
        escalation={"below_confidence": 0.5, "audit_fraction": 0.1},
    )
    keys = {f"i{k}": 0.9 for k in range(200)}
    predict(project, keys)
    crowd(project, {k: ["match"] for k in keys})
    audited = set(
        Escalation.objects.filter(reason="audit").values_list("item__external_id", flat=True)
    )
    ids = dict(Item.objects.values_list("external_id", "pk"))
    expected = {k for k in keys if audit_draw(np.array([ids[k]]), project.pk)[0] < 0.1}

    consensus_compute(project=project)

    assert audited == expected and 5 <= len(audited) <= 40
    assert Escalation.objects.count() == len(audited)
    assert Item.objects.filter(state="escalated").count() == len(audited)


def test_gold_conflicts_reach_the_queue(make_project: Callable[..., Project]) -> None:
    from labelling.services.gold import gold_import

    project = make_project(escalation={"audit_fraction": 0})
    predict(project, {"g": 0.9})
    gold_import(
        project=project,
        stream=io.BytesIO(b'{"external_id": "g", "label": "no_match"}'),
        fmt="jsonl",
    )
    crowd(project, {"g": ["match", "match", "match"]})

    assert [e.reason for e in escalation_queue(project, "gold_conflict")] == ["gold_conflict"]
    assert list(escalation_queue(project, "audit")) == []


# ---- leasing ----


def test_two_experts_are_lent_different_escalations_and_keep_theirs(split: Project) -> None:
    ezra, elsa = user(split, "ezra"), user(split, "elsa")

    first = escalation_lease(project=split, user=ezra)
    second = escalation_lease(project=split, user=elsa)
    again = escalation_lease(project=split, user=ezra)

    assert first is not None and second is not None and again is not None
    assert first.pk != second.pk and again.pk == first.pk
    assert first.item.external_id == "a"


def test_a_reason_filter_leases_only_that_reason(split: Project) -> None:
    assert escalation_lease(project=split, user=user(split, "ezra"), reason="audit") is None
    with pytest.raises(InvalidInput):
        escalation_lease(project=split, user=user(split, "elsa"), reason="boredom")


def test_an_escalation_another_expert_holds_cannot_be_resolved(split: Project) -> None:
    ezra, elsa = user(split, "ezra"), user(split, "elsa")
    held = escalation_lease(project=split, user=ezra)
    assert held is not None

    with pytest.raises(Conflict, match="another expert"):
        escalation_resolve(escalation_id=held.pk, user=elsa, decision=Decision("label", "match"))


def test_an_expired_expert_lease_is_taken_over(split: Project) -> None:
    ezra, elsa = user(split, "ezra"), user(split, "elsa")
    held = escalation_lease(project=split, user=ezra)
    assert held is not None
    Escalation.objects.filter(pk=held.pk).update(lease_expires_at=held.created_at)

    taken = escalation_lease(project=split, user=elsa)

    assert taken is not None and taken.pk == held.pk and taken.leased_to == elsa


# ---- decisions ----


def test_the_expert_s_label_is_final_and_counts_against_the_crowd(split: Project) -> None:
    ezra = user(split, "ezra")
    escalation = escalation_queue(split).first()
    assert escalation is not None

    done = escalation_resolve(
        escalation_id=escalation.pk, user=ezra, decision=Decision("label", "match", "clear match")
    )
    consensus_compute(project=split)

    item = Item.objects.get(external_id="a")
    assert (item.state, item.expert_label, item.gold_label) == ("resolved", "match", "")
    assert (done.resolution, done.label, done.note, done.resolved_by) == (
        "label",
        "match",
        "clear match",
        ezra,
    )
    assert done.crowd_label in ("match", "no_match") and done.resolved_at is not None
    assert QueueEntry.objects.get(item=item).collecting is False
    wrong = Labeller.objects.get(worker_id="w1")
    right = Labeller.objects.get(worker_id="w0")
    assert (wrong.gold_answers, wrong.gold_accuracy) == (1, 0.0)
    assert (right.gold_answers, right.gold_accuracy) == (1, 1.0)


def test_removing_an_item_takes_it_out_of_the_data_set(split: Project) -> None:
    escalation = escalation_queue(split).first()
    assert escalation is not None

    escalation_resolve(
        escalation_id=escalation.pk,
        user=user(split, "ezra"),
        decision=Decision("remove", note="not a pet service"),
    )
    consensus_compute(project=split)

    assert Item.objects.get(pk=escalation.item_id).state == "removed"
    assert Escalation.objects.get(pk=escalation.pk).resolution == "remove"


def test_sending_back_asks_the_crowd_for_a_fresh_round_and_keeps_the_note(split: Project) -> None:
    escalation = escalation_queue(split).first()
    assert escalation is not None

    escalation_resolve(
        escalation_id=escalation.pk,
        user=user(split, "ezra"),
        decision=Decision("send_back", note="instructions: a vet counts as a match"),
    )
    consensus_compute(project=split)

    item = Item.objects.get(pk=escalation.item_id)
    entry = QueueEntry.objects.get(item=item)
    assert item.state == "collecting"
    assert (entry.collecting, entry.labels_count, entry.needed) == (True, 2, 4)
    crowd(split, {item.external_id: ["match", "no_match", "match", "no_match"]})
    assert Item.objects.get(pk=item.pk).state == "escalated"
    again = Escalation.objects.get(item=item, resolved_at__isnull=True)
    assert again.pk != escalation.pk
    (evidence,) = escalation_evidence([again])
    assert [(n["resolution"], n["note"], n["by"]) for n in evidence["notes"]] == [
        ("send_back", "instructions: a vet counts as a match", "ezra")
    ]


def test_marking_as_gold_makes_a_gold_check(split: Project) -> None:
    escalation = escalation_queue(split).first()
    assert escalation is not None

    escalation_resolve(
        escalation_id=escalation.pk, user=user(split, "ezra"), decision=Decision("gold", "no_match")
    )

    item = Item.objects.get(pk=escalation.item_id)
    assert (item.state, item.gold_label, item.expert_label) == ("resolved", "no_match", "no_match")
    assert item.gold_set_at is not None


@pytest.mark.parametrize(
    ("decision", "field"),
    [
        (Decision("label", "maybe"), "label"),
        (Decision("gold", ""), "label"),
        (Decision("remove", "match"), "label"),
        (Decision("send_back", note="  "), "note"),
        (Decision("shrug"), "action"),
    ],
)
def test_a_bad_decision_names_the_field_and_changes_nothing(
    split: Project, decision: Decision, field: str
) -> None:
    escalation = escalation_queue(split).first()
    assert escalation is not None

    with pytest.raises(InvalidInput) as error:
        escalation_resolve(escalation_id=escalation.pk, user=user(split, "ezra"), decision=decision)

    assert [e.field for e in error.value.errors] == [field]
    assert Escalation.objects.get(pk=escalation.pk).resolved_at is None
    assert Item.objects.get(pk=escalation.item_id).state == "escalated"


def test_a_repeated_decision_is_answered_as_before_and_a_different_one_refused(
    split: Project,
) -> None:
    ezra = user(split, "ezra")
    escalation = escalation_queue(split).first()
    assert escalation is not None
    first = escalation_resolve(
        escalation_id=escalation.pk, user=ezra, decision=Decision("label", "match")
    )

    again = escalation_resolve(
        escalation_id=escalation.pk, user=ezra, decision=Decision("label", "match")
    )

    assert again.resolved_at == first.resolved_at
    with pytest.raises(Conflict, match="already resolved by ezra"):
        escalation_resolve(
            escalation_id=escalation.pk, user=user(split, "elsa"), decision=Decision("remove")
        )


def test_statistics_count_open_resolved_and_overruled(split: Project) -> None:
    ezra = user(split, "ezra")
    a, b, _ = escalation_queue(split)
    escalation_resolve(escalation_id=a.pk, user=ezra, decision=Decision("label", "match"))
    escalation_resolve(escalation_id=b.pk, user=ezra, decision=Decision("label", "no_match"))

    stats = review_statistics(split)

    assert stats["open"] == {"low_confidence": 1, "gold_conflict": 0, "audit": 0}
    assert stats["resolved"] == 2 and sum(n for _, n in stats["by_day"]) == 2
    assert stats["compared"] == 2 and stats["overruled"] == 1
    assert stats["overruled_share"] == 0.5


# ---- the API, for every role ----


def escalation_ids(project: Project) -> list[int]:
    return list(escalation_queue(project).values_list("pk", flat=True))


def test_the_escalation_list_shows_the_evidence(
    split: Project, client_for: Callable[..., APIClient]
) -> None:
    api = client_for(split, "ezra", Role.EXPERT)

    response = api.get("/api/v1/projects/pet-match/escalations?limit=2")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["count"] == 3 and body["next"].endswith("offset=2")
    first = body["results"][0]
    assert first["item"] == {
        "external_id": "a",
        "payload": {"text": "text of a"},
        "state": "escalated",
        "gold_label": "",
    }
    assert first["prediction"]["confidence"] == 0.55
    assert first["prediction"]["probabilities"] == {"match": 0.55, "no_match": 0.45}
    assert set(first["consensus"]["posterior"]) == {"match", "no_match"}
    assert [(x["labeller"], x["label"]) for x in first["labels"]] == [
        ("w0", "match"),
        ("w1", "no_match"),
    ]
    assert "accuracy" in first["labels"][0]["reliability"]
    assert first["reason"] == "low_confidence" and first["notes"] == []
    assert api.get("/api/v1/projects/pet-match/escalations?reason=audit").json()["count"] == 0
    assert api.get("/api/v1/projects/pet-match/escalations?limit=0").status_code == 400
    assert api.get("/api/v1/projects/pet-match/escalations?offset=" + "9" * 20).status_code == 400
    assert api.get("/api/v1/projects/pet-match/escalations?reason=x").status_code == 400


@pytest.mark.parametrize(
    ("body", "state", "resolution"),
    [
        ({"label": "match", "note": "clear"}, "resolved", "label"),
        ({"action": "remove"}, "removed", "remove"),
        ({"action": "remove", "note": "duplicate"}, "removed", "remove"),
        ({"action": "send_back", "note": "say what a vet is"}, "collecting", "send_back"),
        ({"action": "gold", "label": "no_match"}, "resolved", "gold"),
        ({"action": "label", "label": "no_match"}, "resolved", "label"),
    ],
)
@pytest.mark.parametrize("role", [Role.EXPERT, Role.ENGINEER])
def test_experts_and_engineers_resolve_by_every_action(
    split: Project,
    client_for: Callable[..., APIClient],
    role: Role,
    body: dict[str, str],
    state: str,
    resolution: str,
) -> None:
    api = client_for(split, "reviewer", role)
    pk = escalation_ids(split)[0]

    response = api.post(f"/api/v1/escalations/{pk}/resolve", body, format="json")

    assert response.status_code == 200, response.content
    data = response.json()
    assert (data["resolution"], data["item"]["state"], data["resolved_by"]) == (
        resolution,
        state,
        "reviewer",
    )
    assert data["label_source"] == ("expert" if body.get("label") else None)
    assert Item.objects.get(external_id="a").state == state


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"note": "no decision"},
        {"label": "maybe"},
        {"action": "remove", "label": "match"},
        {"action": "send_back"},
        {"action": "gold"},
        {"action": "nuke"},
        {"label": "match", "note": "x" * 2001},
    ],
)
def test_a_bad_resolve_request_is_a_400_and_writes_nothing(
    split: Project, expert_api: APIClient, body: dict[str, str]
) -> None:
    pk = escalation_ids(split)[0]

    response = expert_api.post(f"/api/v1/escalations/{pk}/resolve", body, format="json")

    assert response.status_code == 400, response.content
    assert Escalation.objects.get(pk=pk).resolved_at is None


def test_resolving_twice_or_someone_else_s_escalation_is_a_409(
    split: Project, client_for: Callable[..., APIClient]
) -> None:
    ezra = client_for(split, "ezra", Role.EXPERT)
    elsa = client_for(split, "elsa", Role.EXPERT)
    held = ezra.get("/api/v1/projects/pet-match/escalations/next").json()["id"]

    refused = elsa.post(f"/api/v1/escalations/{held}/resolve", {"label": "match"}, format="json")
    done = ezra.post(f"/api/v1/escalations/{held}/resolve", {"label": "match"}, format="json")
    late = elsa.post(f"/api/v1/escalations/{held}/resolve", {"label": "match"}, format="json")

    assert (refused.status_code, done.status_code, late.status_code) == (409, 200, 409)


def test_next_leases_one_at_a_time_and_says_204_when_done(
    split: Project, expert_api: APIClient
) -> None:
    seen = []
    for _ in range(3):
        response = expert_api.get("/api/v1/projects/pet-match/escalations/next")
        assert response.status_code == 200
        assert (
            expert_api.get("/api/v1/projects/pet-match/escalations/next").json()["id"]
            == (response.json()["id"])
        )
        seen.append(response.json()["item"]["external_id"])
        pk = response.json()["id"]
        expert_api.post(f"/api/v1/escalations/{pk}/resolve", {"label": "match"}, format="json")

    assert seen == ["a", "c", "b"]
    assert expert_api.get("/api/v1/projects/pet-match/escalations/next").status_code == 204


def test_a_crowd_labeller_is_refused_with_403(split: Project, crowd_api: APIClient) -> None:
    pk = escalation_ids(split)[0]

    listing = crowd_api.get("/api/v1/projects/pet-match/escalations")
    lease = crowd_api.get("/api/v1/projects/pet-match/escalations/next")
    resolve = crowd_api.post(f"/api/v1/escalations/{pk}/resolve", {"label": "match"}, format="json")

    assert (listing.status_code, lease.status_code, resolve.status_code) == (403, 403, 403)
    assert Escalation.objects.get(pk=pk).resolved_at is None


def test_an_expert_of_another_project_gets_404(
    split: Project, make_project: Callable[..., Project], client_for: Callable[..., APIClient]
) -> None:
    other = make_project(slug="other")
    outsider = client_for(other, "otto", Role.EXPERT)
    pk = escalation_ids(split)[0]

    listing = outsider.get("/api/v1/projects/pet-match/escalations")
    lease = outsider.get("/api/v1/projects/pet-match/escalations/next")
    resolve = outsider.post(f"/api/v1/escalations/{pk}/resolve", {"label": "match"}, format="json")

    assert (listing.status_code, lease.status_code, resolve.status_code) == (404, 404, 404)
    assert outsider.post("/api/v1/escalations/999999/resolve", {"label": "match"}).status_code == (
        404
    )


def test_anonymous_requests_are_refused(split: Project) -> None:
    api = APIClient()
    pk = escalation_ids(split)[0]

    assert api.get("/api/v1/projects/pet-match/escalations").status_code in (401, 403)
    assert api.post(f"/api/v1/escalations/{pk}/resolve", {"label": "match"}).status_code in (
        401,
        403,
    )


# ---- the pages ----


def logged_in(project: Project, name: str, role: Role) -> object:
    from django.test import Client

    labeller, _ = labeller_create(project=project, username=name, role=role)
    client = Client()
    client.force_login(labeller.user)
    return client


@pytest.mark.parametrize("role", [Role.EXPERT, Role.ENGINEER])
def test_the_review_page_opens_for_experts_and_engineers(split: Project, role: Role) -> None:
    response = logged_in(split, "reviewer", role).get("/review/pet-match/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "every reason (3 open)" in html and "low_confidence (3 open)" in html
    assert 'data-key="1"' in html and "js/review.js" in html and "js/item.js" in html


def test_the_review_page_refuses_a_crowd_labeller_and_hides_other_projects(
    split: Project, make_project: Callable[..., Project]
) -> None:
    crowd_page = logged_in(split, "cora", Role.CROWD).get("/review/pet-match/")
    other = make_project(slug="other")
    outsider = logged_in(other, "otto", Role.EXPERT).get("/review/pet-match/")

    assert crowd_page.status_code == 403 and outsider.status_code == 404


def test_the_dashboard_shows_the_expert_figures(split: Project) -> None:
    ezra = user(split, "ezra")
    a, b, _ = escalation_queue(split)
    escalation_resolve(escalation_id=a.pk, user=ezra, decision=Decision("label", "match"))
    escalation_resolve(
        escalation_id=b.pk, user=ezra, decision=Decision("send_back", note="define a vet")
    )

    html = logged_in(split, "erin", Role.ENGINEER).get("/projects/pet-match/").content.decode()

    assert "Expert review" in html and "2 escalations resolved" in html
    assert "overruled the crowd" in html and "define a vet" in html
    assert "<td>low_confidence</td><td>1</td>" in html
