"""Two projects, each with one of every object a route can name (leases, releases, escalations,
labellers, problems, jobs, invitations, outside-crowd batches), gold items, consensus rows and
other labellers' labels; and the six people of the access matrix.

Values a crowd labeller must never see are distinctive strings (SECRET_*), so that a response
can be searched for them.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from core.permissions import Role
from labelling.crowd.models import CrowdBatch, CrowdTask
from labelling.models import Consensus, Escalation, Item, Job, Labeller, Project, Release
from labelling.policy import parse_policy
from labelling.services.consensus import consensus_compute
from labelling.services.gold import gold_import
from labelling.services.imports import predictions_import
from labelling.services.invitations import invitation_create
from labelling.services.labellers import labeller_create
from labelling.services.labels import labels_import
from labelling.services.leasing import label_submit, lease_next
from labelling.services.problems import ProblemChange, problem_create
from labelling.services.projects import project_create_or_update
from labelling.services.queueing import queue_select
from labelling.services.releases import ReleaseRequest, release_create
from labelling.services.review import Decision, escalation_resolve
from labelling.spec import parse_spec

# The six columns of the access matrix, in table order.
ROLES = ("anonymous", "crowd", "crowd_other", "expert", "engineer", "engineer_other")

# What the model said, what the crowd agreed on, who else labelled, what the expert wrote: none
# of it may reach a crowd labeller.
SECRET_PROBABILITY = 0.6173
SECRET_LABELLERS = ("secret-worker-w7", "secret-worker-w8", "secret-worker-w9")
SECRET_NOTE = "secret expert note 4q7z"
SECRET_PROBLEM = "secret-problem-k2x"
SECRET_INSTRUCTIONS_OF_OTHER = "instructions of the other project 9v1"


@dataclass
class Objects:
    """The ids of one project's objects, by the name the route tables use."""

    project: Project
    slug: str
    open_lease: int = 0
    answered_lease: int = 0
    labeller: int = 0
    escalation: int = 0
    release: int = 0
    job: int = 0
    problem: int = 0
    invitation: str = ""
    hit: str = ""
    study: str = ""
    batch: int = 0
    study_task: int = 0
    # Secret values as they could be printed (JSON numbers and text).
    secrets: list[str] = field(default_factory=list)

    def values(self) -> dict[str, Any]:
        """The values that fill the {placeholders} of a route table's paths."""
        return {
            name: getattr(self, name)
            for name in (
                "slug", "open_lease", "answered_lease", "labeller", "escalation", "release",
                "job", "problem", "invitation", "hit", "study", "batch", "study_task",
            )
        }  # fmt: skip


@dataclass
class World:
    """Project A (the one the matrix is about), project B (the other one) and the people."""

    a: Objects
    b: Objects
    people: dict[str, AbstractBaseUser | None]
    tokens: dict[str, str]


def _jsonl(rows: list[dict[str, Any]]) -> io.BytesIO:
    return io.BytesIO("\n".join(json.dumps(row) for row in rows).encode())


def _spec(slug: str, instructions: str) -> dict[str, Any]:
    return {
        "slug": slug,
        "name": f"Project {slug}",
        "labels": ["match", "no_match"],
        "instructions": instructions,
        "overlap": {"min": 2, "max": 2, "target_confidence": 0.95},
        "gold_rate": 0,
        "escalation": {"below_confidence": 0.9, "audit_fraction": 0},
    }


def _items(project: Project) -> None:
    """Nine items: d0, d1 disputed by the crowd, a0 agreed, q0…q3 waiting, g0, g1 gold."""
    keys = ["d0", "d1", "a0", "q0", "q1", "q2", "q3", "g0", "g1"]
    rows = [
        {
            "external_id": key,
            "payload": {"text": f"text of {key}"},
            "model_version": "m1",
            "probabilities": {"match": SECRET_PROBABILITY, "no_match": 1 - SECRET_PROBABILITY},
            "split": "train",
        }
        for key in keys
    ]
    predictions_import(project=project, stream=_jsonl(rows), fmt="jsonl")
    gold_import(
        project=project,
        stream=_jsonl([{"external_id": "g0", "label": "no_match"},
                       {"external_id": "g1", "label": "match"}]),
        fmt="jsonl",
    )  # fmt: skip
    queue_select(
        project=project,
        policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]}),
    )


def _crowd_labels(project: Project, answers: list[tuple[str, str, str]]) -> None:
    """Labels of other labellers, (item, labeller, label), then consensus."""
    rows = [{"external_id": k, "labeller": w, "label": v} for k, w, v in answers]
    labels_import(project=project, stream=_jsonl(rows), fmt="jsonl")
    consensus_compute(project=project)


def _release(project: Project, engineer: Any, folder: Path) -> Release:
    return release_create(
        project=project,
        user=engineer,
        request=ReleaseRequest(override_reason="a small test release", override_checks=()),
        storage_url=folder.as_uri(),
    )


def _crowd_batches(project: Project, engineer: Any) -> tuple[CrowdTask, CrowdTask]:
    """An open Mechanical Turk batch with one HIT, and an open study link of Prolific, both on
    the disputed item d0 (consensus, other labellers' labels, an escalation) and gold item g0."""
    d0, g0 = (Item.objects.get(project=project, external_id=key) for key in ("d0", "g0"))
    common = {
        "project": project,
        "status": CrowdBatch.Status.OPEN,
        "reward": Decimal("0.05"),
        "assignments_per_item": 2,
        "cost_estimate": Decimal("0.20"),
        "created_by": engineer,
    }
    mturk = CrowdBatch.objects.create(platform="mturk", token=f"tok-mturk-{project.slug}",
                                      remote_id=f"HITTYPE-{project.slug}", **common)  # fmt: skip
    hit = CrowdTask.objects.create(batch=mturk, item=d0, remote_id=f"HIT-{project.slug}")
    CrowdTask.objects.create(batch=mturk, item=g0, remote_id=f"HIT-gold-{project.slug}")
    study = CrowdBatch.objects.create(platform="prolific", token=f"study{project.slug}x",
                                      completion_code="C0DE", **common)  # fmt: skip
    first = CrowdTask.objects.create(batch=study, item=d0)
    CrowdTask.objects.create(batch=study, item=g0)
    return hit, first


def build_project(
    slug: str, people: dict[str, str], folder: Path, instructions: str = "Be careful"
) -> tuple[Objects, dict[str, AbstractBaseUser], dict[str, str]]:
    """A project with every kind of object; `people` maps a role column to a username."""
    project, _ = project_create_or_update(spec=parse_spec(_spec(slug, instructions)))
    users: dict[str, AbstractBaseUser] = {}
    tokens: dict[str, str] = {}
    roles = {"crowd": Role.CROWD, "expert": Role.EXPERT, "engineer": Role.ENGINEER}
    for column, username in people.items():
        labeller, tokens[column] = labeller_create(
            project=project, username=username, role=roles[column]
        )
        assert labeller.user is not None
        users[column] = labeller.user
    engineer = users["engineer"]
    _items(project)
    w7, w8, w9 = SECRET_LABELLERS
    # Split on d0 and d1 (escalated at the overlap of two), agreed on a0.
    _crowd_labels(project, [
        ("d0", w7, "match"), ("d0", w8, "no_match"), ("d1", w7, "no_match"),
        ("d1", w8, "match"), ("a0", w7, "match"), ("a0", w8, "match"),
    ])  # fmt: skip
    objects = Objects(project=project, slug=slug)

    # The crowd labeller answered one item and holds the next.
    crowd = Labeller.objects.get(project=project, user=users["crowd"])
    answered = lease_next(project=project, labeller=crowd)
    assert answered is not None and not answered.is_gold
    label_submit(lease_id=answered.pk, user=users["crowd"], value="match", duration_ms=900)
    held = lease_next(project=project, labeller=crowd)
    assert held is not None
    objects.open_lease, objects.answered_lease = held.pk, answered.pk
    # Another labeller on an item still collecting, and on a gold item.
    other = Item.objects.filter(project=project, external_id__startswith="q").exclude(
        pk__in=[answered.item_id, held.item_id]
    )[0]
    _crowd_labels(project, [(other.external_id, w9, "no_match"), ("g0", w9, "match")])

    objects.labeller = Labeller.objects.get(project=project, worker_id=SECRET_LABELLERS[0]).pk
    disputed = Escalation.objects.filter(project=project, resolved_at__isnull=True)
    d0, d1 = (disputed.get(item__external_id=key) for key in ("d0", "d1"))
    escalation_resolve(
        escalation_id=d1.pk, user=engineer,
        decision=Decision(action="send_back", note=SECRET_NOTE),
    )  # fmt: skip
    objects.escalation = d0.pk
    release = _release(project, engineer, folder)
    objects.release, objects.job = release.pk, Job.objects.create(
        project=project, kind=Job.Kind.RELEASE, status=Job.Status.SUCCEEDED,
        created_by=engineer, params={"format": "jsonl"}, result={"release": release.pk},
    ).pk  # fmt: skip
    problem, _ = problem_create(
        project=project, user=engineer,
        change=ProblemChange(name=f"{SECRET_PROBLEM}-{slug}", items=["d0", "a0"]),
    )  # fmt: skip
    objects.problem = problem.pk
    objects.invitation = invitation_create(project=project, user=engineer).token
    hit, study = _crowd_batches(project, engineer)
    objects.hit, objects.study_task = hit.remote_id, study.pk
    objects.study, objects.batch = study.batch.token, study.batch_id
    # a0's consensus (two agreeing labels) has a posterior no other figure shares.
    agreed = Consensus.objects.get(item__project=project, item__external_id="a0")
    objects.secrets = [
        str(SECRET_PROBABILITY), *SECRET_LABELLERS, SECRET_NOTE, SECRET_PROBLEM,
        release.sha256, str(agreed.confidence), f"{agreed.confidence:.4f}",
        *(str(p) for p in agreed.posterior),
    ]  # fmt: skip
    return objects, users, tokens


def build_world(folder: Path) -> World:
    """Project A with a crowd labeller, an expert and an engineer; project B with its own."""
    a, users_a, tokens_a = build_project(
        "pet-match", {"crowd": "cora", "expert": "ezra", "engineer": "erin"}, folder
    )
    b, users_b, tokens_b = build_project(
        "other-project", {"crowd": "colin", "engineer": "enzo"}, folder,
        instructions=SECRET_INSTRUCTIONS_OF_OTHER,
    )  # fmt: skip
    people: dict[str, AbstractBaseUser | None] = {"anonymous": None, **users_a}
    people["crowd_other"], people["engineer_other"] = users_b["crowd"], users_b["engineer"]
    tokens = {**tokens_a, "crowd_other": tokens_b["crowd"], "engineer_other": tokens_b["engineer"]}
    return World(a=a, b=b, people=people, tokens=tokens)
