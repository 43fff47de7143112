"""Project specs and `create_project`: defaults, every invalid field named, update in place."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.exceptions import InvalidInput
from labelling.models import Project
from labelling.spec import parse_spec

CONTRACT_EXAMPLE: dict[str, Any] = {
    "slug": "pet-match",
    "name": "Pet-service matching",
    "labels": ["match", "no_match"],
    "positive_label": "match",
    "threshold": 0.5,
    "instructions": "Markdown shown to labellers",
    "overlap": {"min": 3, "max": 5, "target_confidence": 0.95},
    "gold_rate": 0.1,
    "escalation": {"below_confidence": 0.8},
}


def problems(spec: object) -> list[tuple[str, str]]:
    with pytest.raises(InvalidInput) as caught:
        parse_spec(spec)
    return [(e.field, e.reason) for e in caught.value.errors]


def test_the_contract_example_parses_with_every_value_kept() -> None:
    spec = parse_spec(CONTRACT_EXAMPLE)

    assert spec.labels == ("match", "no_match")
    assert (spec.overlap_min, spec.overlap_max, spec.target_confidence) == (3, 5, 0.95)
    assert (spec.gold_rate, spec.escalation_below_confidence) == (0.1, 0.8)


def test_only_slug_and_labels_are_required_and_the_rest_has_defaults() -> None:
    spec = parse_spec({"slug": "cats", "labels": ["cat", "dog", "other"]})

    assert (spec.name, spec.positive_label, spec.threshold, spec.instructions) == (
        "cats",
        "cat",
        0.5,
        "",
    )
    assert (spec.overlap_min, spec.overlap_max, spec.target_confidence) == (3, 5, 0.95)
    assert (spec.gold_rate, spec.escalation_below_confidence) == (0.1, 0.8)


def test_a_partial_overlap_section_keeps_the_other_defaults() -> None:
    spec = parse_spec({"slug": "cats", "labels": ["a", "b"], "overlap": {"max": 7}})

    assert (spec.overlap_min, spec.overlap_max) == (3, 7)


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"slug": "Bad Slug"}, "slug", "must be 1–50 lower-case letters"),
        ({"labels": ["only"]}, "labels", "at least two labels"),
        ({"labels": ["a", "a"]}, "labels", "unique"),
        ({"labels": ["a", 3]}, "labels[1]", "must be a string"),
        ({"positive_label": "maybe"}, "positive_label", "'maybe' is not one of the labels"),
        ({"threshold": 0}, "threshold", "must be in (0, 1]"),
        ({"threshold": "high"}, "threshold", "must be a number"),
        ({"overlap": {"min": 0}}, "overlap.min", "between 1 and 50"),
        ({"overlap": {"min": 4, "max": 3}}, "overlap.max", "at least overlap.min"),
        ({"overlap": {"target_confidence": 1.5}}, "overlap.target_confidence", "must be in (0, 1]"),
        ({"overlap": {"mx": 3}}, "overlap.mx", "unknown field"),
        ({"gold_rate": -0.1}, "gold_rate", "must be in [0, 1]"),
        (
            {"escalation": {"below_confidence": True}},
            "escalation.below_confidence",
            "must be a number",
        ),
        ({"escalation": 0.8}, "escalation", "must be an object"),
        ({"colour": "blue"}, "colour", "unknown field"),
    ],
)
def test_each_invalid_field_is_named_with_its_reason(
    change: dict[str, Any], field: str, reason: str
) -> None:
    found = problems({**CONTRACT_EXAMPLE, **change})

    assert any(f == field and reason in r for f, r in found), found


def test_missing_slug_and_labels_are_both_reported() -> None:
    assert {field for field, _ in problems({"name": "x"})} >= {"slug", "labels"}


def test_a_spec_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(InvalidInput, match="must be a JSON object"):
        parse_spec(["slug"])


# The command.


def write_spec(tmp_path: Path, spec: object) -> str:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return str(path)


@pytest.mark.django_db
def test_create_project_creates_then_updates_in_place(tmp_path: Path) -> None:
    out = io.StringIO()
    call_command("create_project", "--spec", write_spec(tmp_path, CONTRACT_EXAMPLE), stdout=out)
    first = Project.objects.get()

    changed = {**CONTRACT_EXAMPLE, "threshold": 0.7, "instructions": "New"}
    call_command("create_project", "--spec", write_spec(tmp_path, changed), stdout=out)

    project = Project.objects.get()
    assert project.pk == first.pk
    assert (project.threshold, project.instructions) == (0.7, "New")
    assert out.getvalue().splitlines() == [
        "created project pet-match (2 labels)",
        "updated project pet-match (2 labels)",
    ]


@pytest.mark.django_db
def test_create_project_exits_1_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(CommandError) as caught:
        call_command(
            "create_project", "--spec", write_spec(tmp_path, {**CONTRACT_EXAMPLE, "gold_rate": 2})
        )

    assert caught.value.returncode == 1
    assert "field gold_rate: must be in [0, 1], got 2" in str(caught.value)
    assert not Project.objects.exists()


@pytest.mark.django_db
def test_create_project_reports_unreadable_and_malformed_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")

    with pytest.raises(CommandError, match="not valid UTF-8 JSON"):
        call_command("create_project", "--spec", str(bad))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("create_project", "--spec", str(tmp_path / "missing.json"))


@pytest.mark.django_db
def test_the_label_set_cannot_change_once_items_exist(tmp_path: Path, project: Project) -> None:
    from labelling.models import Item

    Item.objects.create(
        project=project, external_id="a1", content_hash="x", created_at="2026-01-01T00:00Z"
    )

    with pytest.raises(CommandError, match="field labels: cannot change once items exist"):
        call_command(
            "create_project",
            "--spec",
            write_spec(tmp_path, {**CONTRACT_EXAMPLE, "labels": ["y", "n"], "positive_label": "y"}),
        )
