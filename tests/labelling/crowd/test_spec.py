"""The project spec's optional `crowd` block."""

from __future__ import annotations

import pytest

from core.exceptions import InvalidInput
from labelling.crowd.services import crowd_options
from labelling.services.projects import project_create_or_update
from labelling.spec import parse_spec

BASE = {"slug": "pet-match", "labels": ["match", "no_match"]}


def test_the_crowd_block_is_optional_and_filled_with_defaults() -> None:
    spec = parse_spec(BASE)

    assert spec.crowd["reward"] == 0.05 and spec.crowd["min_approval_rate"] == 95
    assert spec.crowd["assignments"] is None and spec.crowd["auto_approve_hours"] == 72


@pytest.mark.django_db
def test_the_crowd_block_is_stored_and_assignments_default_to_the_overlap() -> None:
    spec = parse_spec(
        {
            **BASE,
            "overlap": {"min": 2, "max": 4},
            "crowd": {"reward": 0.25, "title": "Pets", "min_approval_rate": 98},
        }
    )

    project, _ = project_create_or_update(spec=spec)
    options = crowd_options(project)

    assert (options["reward"], options["title"], options["min_approval_rate"]) == (0.25, "Pets", 98)
    assert options["assignments"] == 2 and options["description"].startswith("Choose the right")


def test_a_bad_crowd_block_names_every_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_spec(
            {
                **BASE,
                "crowd": {
                    "reward": 0,
                    "assignments": 0,
                    "lifetime_hours": "x",
                    "min_approval_rate": 101,
                    "tip": 1,
                },
            }
        )

    fields = {error.field for error in caught.value.errors}
    assert fields == {
        "crowd.reward",
        "crowd.assignments",
        "crowd.lifetime_hours",
        "crowd.min_approval_rate",
        "crowd.tip",
    }
