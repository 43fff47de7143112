"""Property tests of the JSON a user writes by hand (project specs and queue policies): whatever
the value, or the bytes of the file it comes in, it is either taken, and then works, or refused
with errors that name each bad field; nothing half-done is left behind."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from hypothesis import given
from hypothesis import strategies as st

from core.exceptions import InvalidInput
from labelling.models import Item, Project, QueueEntry, QueuePolicy
from labelling.policy import MEASURES, parse_policy
from labelling.services.imports import predictions_import
from labelling.services.projects import project_create_or_update
from labelling.services.queueing import queue_select
from labelling.spec import parse_spec

pytestmark = pytest.mark.django_db

HUGE = st.sampled_from([10**20, 2**63, 2**31, 10**400, -(10**400), 1e308])
NUMBERS = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**40), 2**40) | HUGE
TEXT = st.text(max_size=10) | st.sampled_from(["", "\x00", "a\x00b", "\ud800", "é"])
JUNK = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
FRACTIONS = st.floats(min_value=0, max_value=1) | JUNK


def _maybe(value: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return value | JUNK


RULES = st.one_of(
    st.fixed_dictionaries(
        {"rule": _maybe(st.just("near_threshold")), "band": _maybe(st.floats(0, 0.5))}
    ),
    st.fixed_dictionaries(
        {"rule": _maybe(st.just("uncertain")), "measure": _maybe(st.sampled_from(MEASURES))},
        optional={
            "top": _maybe(st.integers(min_value=0, max_value=10**12)),
            "above": _maybe(st.floats(0, 2)),
        },
    ),
    st.fixed_dictionaries(
        {
            "rule": _maybe(st.just("confident")),
            "min_confidence": _maybe(st.floats(0, 1)),
            "fraction": FRACTIONS,
        }
    ),
    st.fixed_dictionaries({"rule": _maybe(st.just("random")), "fraction": FRACTIONS}),
    JUNK,
)
POLICIES = (
    st.fixed_dictionaries(
        {"rules": st.lists(RULES, max_size=4) | JUNK},
        optional={"budget": st.integers(min_value=0, max_value=10**12) | JUNK, "extra": JUNK},
    )
    | JUNK
)


def named(refused: InvalidInput) -> bool:
    """Every error of a refused spec or policy says which field and why (a field named "" is
    called an empty name)."""
    return bool(refused.message) and all(
        e.reason and (e.field or "empty name" in e.reason) for e in refused.errors
    )


@pytest.fixture
def predicted(project: Project) -> Project:
    rows = [
        {
            "external_id": f"i{n}",
            "payload": {"text": f"item {n}"},
            "model_version": "m1",
            "probabilities": {"match": n / 10, "no_match": 1 - n / 10},
            "samples": [[n / 10, 1 - n / 10], [0.5, 0.5]],
        }
        for n in range(11)
    ]
    content = "\n".join(json.dumps(row) for row in rows).encode()
    predictions_import(project=project, stream=io.BytesIO(content), fmt="jsonl")
    return project


def queue_state() -> tuple[int, int, list[tuple[str, str]]]:
    return (
        QueueEntry.objects.count(),
        QueuePolicy.objects.count(),
        sorted(Item.objects.values_list("external_id", "state")),
    )


@given(policy=POLICIES, budget=st.none() | st.integers(min_value=-5, max_value=10**12) | HUGE)
def test_a_queue_policy_is_taken_and_queues_or_is_refused_by_field(
    predicted: Project, policy: Any, budget: Any
) -> None:
    before = queue_state()
    try:
        parsed = parse_policy(policy, budget=budget)
        result = queue_select(project=predicted, policy=parsed)
    except InvalidInput as refused:
        assert named(refused), refused.report()
        assert queue_state() == before
    else:
        assert result.queued == sum(rule["queued"] for rule in result.by_rule)
        assert result.queued <= (parsed.budget if parsed.budget is not None else result.queued)


@given(content=st.binary(max_size=200) | POLICIES.map(lambda p: json.dumps(p).encode()))
def test_the_queue_command_reads_any_policy_file_or_exits_1(
    predicted: Project, content: bytes, tmp_path_factory: pytest.TempPathFactory
) -> None:
    path = tmp_path_factory.mktemp("policy") / "policy.json"
    path.write_bytes(content)
    before = queue_state()
    try:
        call_command("queue", predicted.slug, "--policy", str(path), stdout=io.StringIO())
    except CommandError as refused:
        assert refused.returncode == 1 and str(refused)
        assert queue_state() == before


def test_a_policy_file_with_a_number_too_long_to_read_exits_1(
    predicted: Project, tmp_path: Path
) -> None:
    for name, content in (("long", b"1" * 5000), ("deep", b"[" * 100_000)):
        path = tmp_path / f"{name}.json"
        path.write_bytes(content)
        with pytest.raises(CommandError) as refused:
            call_command("queue", predicted.slug, "--policy", str(path))
        assert refused.value.returncode == 1 and "is not valid UTF-8 JSON" in str(refused.value)


LABEL_LISTS = st.lists(TEXT, min_size=2, max_size=3) | st.just(["match", "no_match"]) | JUNK
SPECS = (
    st.fixed_dictionaries(
        {"slug": _maybe(st.sampled_from(["pet-match", "other"])), "labels": LABEL_LISTS},
        optional={
            "name": _maybe(TEXT),
            "positive_label": _maybe(st.just("match")),
            "threshold": _maybe(st.floats(0, 1)),
            "instructions": _maybe(TEXT),
            "overlap": _maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "min": _maybe(st.integers(1, 5)),
                        "max": _maybe(st.integers(1, 5)),
                        "target_confidence": _maybe(st.floats(0, 1)),
                    },
                )
            ),
            "gold_rate": FRACTIONS,
            "escalation": _maybe(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "below_confidence": FRACTIONS,
                        "audit_fraction": FRACTIONS,
                        "harm_weights": _maybe(st.dictionaries(TEXT, NUMBERS, max_size=2)),
                    },
                )
            ),
            "schema": _maybe(
                st.dictionaries(
                    TEXT,
                    _maybe(
                        st.fixed_dictionaries(
                            {},
                            optional={
                                "type": _maybe(st.just("number")),
                                "min": NUMBERS,
                                "max": NUMBERS,
                                "required": JUNK,
                            },
                        )
                    ),
                    max_size=2,
                )
            ),
            "crowd": _maybe(st.dictionaries(st.sampled_from(["reward", "title", "x"]), JUNK)),
            "release": _maybe(st.fixed_dictionaries({"max_class_drift": FRACTIONS})),
        },
    )
    | JUNK
)


@given(spec=SPECS)
def test_a_project_spec_is_taken_and_saved_or_refused_by_field(spec: Any) -> None:
    before = list(Project.objects.values())
    try:
        project, _ = project_create_or_update(spec=parse_spec(spec))
    except InvalidInput as refused:
        assert named(refused), refused.report()
        assert list(Project.objects.values()) == before
    else:
        project.refresh_from_db()
        assert project.labels == list(parse_spec(spec).labels)
