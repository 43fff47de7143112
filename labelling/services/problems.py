"""Problems: named model bugs with example patterns, described by engineers and experts.

A problem's patterns are items: existing ones, linked by external id, or new ones given with
their payload, which are created and queued ahead of the rest so that the crowd (and, where it
disagrees, an expert) gives them trusted labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.exceptions import InputError, InvalidInput
from core.text import unstorable, unstorable_json
from labelling.importing.predictions import content_hash
from labelling.models import Item, Problem, ProblemItem, Project
from labelling.services.evaluation import evaluation_schedule_after_commit
from labelling.services.queueing import queue_items_add

MAX_HARM = 1000.0
PATTERN_SOURCE = "problem"
QUEUE_RULE = "problem"
MAX_PATTERNS = 1000


@dataclass
class ProblemChange:
    """What to set on a problem (None: leave as it is) and which patterns to add or remove."""

    name: Any = None
    description: Any = None
    harm: Any = None
    status: Any = None
    reporter: Any = None
    items: list[Any] = field(default_factory=list)
    patterns: list[Any] = field(default_factory=list)
    remove_items: list[Any] = field(default_factory=list)


def _text(value: Any, name: str, limit: int, errors: list[InputError], *, required: bool) -> str:
    if not isinstance(value, str):
        errors.append(InputError("must be a string", name))
        return ""
    text = value.strip()
    if (reason := unstorable(text)) is not None:
        errors.append(InputError(reason, name))
        return ""  # not even looked up: PostgreSQL refuses it in a query too
    if required and not text:
        errors.append(InputError("must not be empty", name))
    if len(text) > limit:
        errors.append(InputError(f"at most {limit} characters, got {len(text)}", name))
    return text


def _harm(value: Any, errors: list[InputError]) -> float:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or not 0 < value <= MAX_HARM:
        errors.append(InputError(f"must be a number in (0, {MAX_HARM:g}], got {value!r}", "harm"))
        return 1.0
    return float(value)


def _apply_fields(problem: Problem, change: ProblemChange, errors: list[InputError]) -> None:
    """Set the given fields on the problem, collecting what is wrong with them."""
    if change.name is not None:
        problem.name = _text(change.name, "name", 200, errors, required=True)
    if change.description is not None:
        problem.description = _text(
            change.description, "description", 10_000, errors, required=False
        )
    if change.reporter is not None:
        problem.reporter = _text(change.reporter, "reporter", 200, errors, required=False)
    if change.harm is not None:
        problem.harm = _harm(change.harm, errors)
    if change.status is not None:
        if change.status not in Problem.Status.values:
            errors.append(
                InputError(f"must be one of {', '.join(Problem.Status.values)}", "status")
            )
        else:
            problem.status = change.status
    duplicate = Problem.objects.filter(project=problem.project, name=problem.name)
    if problem.name and duplicate.exclude(pk=problem.pk).exists():
        errors.append(
            InputError(f"the project already has a problem named {problem.name!r}", "name")
        )


def _external_ids(values: list[Any], name: str, errors: list[InputError]) -> list[str]:
    if not isinstance(values, list):
        errors.append(InputError("must be a list of external ids", name))
        return []
    good = [v for v in values if isinstance(v, str) and v.strip() and unstorable(v) is None]
    if len(good) != len(values):
        errors.append(
            InputError("every external id must be a non-empty string (without NUL)", name)
        )
    return list(dict.fromkeys(v.strip() for v in good))


def _existing(project: Project, ids: list[str], name: str, errors: list[InputError]) -> list[int]:
    """The items with these external ids; each one missing is an error naming it."""
    found = dict(
        Item.objects.filter(project=project, external_id__in=ids).values_list("external_id", "pk")
    )
    for missing in (i for i in ids if i not in found):
        errors.append(InputError(f"no item {missing!r} in the project", name))
    return [found[i] for i in ids if i in found]


def _check_patterns(patterns: Any, errors: list[InputError]) -> dict[str, dict[str, Any]]:
    """external_id → payload of the new patterns, each checked."""
    if not isinstance(patterns, list) or len(patterns) > MAX_PATTERNS:
        errors.append(InputError(f"must be a list of at most {MAX_PATTERNS} patterns", "patterns"))
        return {}
    checked: dict[str, dict[str, Any]] = {}
    for k, pattern in enumerate(patterns):
        where = f"patterns[{k}]"
        if not isinstance(pattern, dict) or set(pattern) - {"external_id", "payload"}:
            errors.append(InputError("must be an object with external_id and payload only", where))
            continue
        external_id, payload = pattern.get("external_id"), pattern.get("payload")
        if not isinstance(external_id, str) or not external_id.strip() or len(external_id) > 255:
            errors.append(
                InputError(
                    "must be a non-empty string of at most 255 characters", f"{where}.external_id"
                )
            )
            continue
        if (reason := unstorable(external_id)) is not None:
            errors.append(InputError(reason, f"{where}.external_id"))
            continue
        if not isinstance(payload, dict) or not payload:
            errors.append(InputError("must be a non-empty JSON object", f"{where}.payload"))
            continue
        if (reason := unstorable_json(payload)) is not None:
            errors.append(InputError(reason, f"{where}.payload"))
            continue
        if checked.setdefault(external_id.strip(), payload) != payload:
            errors.append(
                InputError(
                    f"external_id {external_id!r} is given twice with different payloads", where
                )
            )
    return checked


def _pattern_items(
    project: Project, patterns: dict[str, dict[str, Any]], errors: list[InputError]
) -> tuple[list[int], list[Item]]:
    """Ids of patterns that are items already (with the same payload) and the items to create."""
    known = {
        item.external_id: item
        for item in Item.objects.filter(project=project, external_id__in=list(patterns))
    }
    existing, new = [], []
    now = timezone.now()
    for external_id, payload in patterns.items():
        item = known.get(external_id)
        if item is not None and item.content_hash != content_hash(payload):
            errors.append(
                InputError(
                    f"item {external_id!r} exists with another payload "
                    "(an item's content never changes)",
                    "patterns",
                )
            )
        elif item is not None:
            existing.append(item.pk)
        else:
            new.append(
                Item(project=project, external_id=external_id, payload=payload,
                     content_hash=content_hash(payload), source=PATTERN_SOURCE, created_at=now)
            )  # fmt: skip
    return existing, new


def _change_patterns(
    problem: Problem, change: ProblemChange, user: Any, errors: list[InputError]
) -> int:
    """Link, create and unlink the problem's patterns; return how many items were queued."""
    project = problem.project
    linked = _existing(project, _external_ids(change.items, "items", errors), "items", errors)
    removed = _existing(
        project, _external_ids(change.remove_items, "remove_items", errors), "remove_items", errors
    )
    existing, new = _pattern_items(project, _check_patterns(change.patterns, errors), errors)
    if errors:
        raise InvalidInput("invalid problem", errors=errors)
    created = Item.objects.bulk_create(new)
    if created and created[0].pk is None:  # SQLite before 3.35 returns no ids
        created = list(
            Item.objects.filter(project=project, external_id__in=[i.external_id for i in new])
        )
    new_ids = [item.pk for item in created]
    ProblemItem.objects.filter(problem=problem, item_id__in=removed).delete()
    ProblemItem.objects.bulk_create(
        [
            ProblemItem(problem=problem, item_id=pk, added_by=_user(user))
            for pk in linked + existing + new_ids
        ],
        ignore_conflicts=True,
    )
    return queue_items_add(project=project, item_ids=existing + new_ids, rule=QUEUE_RULE, user=user)


def _user(user: Any) -> Any:
    return user if getattr(user, "is_authenticated", False) else None


@transaction.atomic
def problem_create(*, project: Project, user: Any, change: ProblemChange) -> tuple[Problem, int]:
    """Describe a new problem with its patterns; new patterns are queued for labelling. Return the
    problem and how many items were queued."""
    # The project first, then the problem: the order evaluation locks them in.
    Project.objects.select_for_update(no_key=True).get(pk=project.pk)
    errors: list[InputError] = []
    if change.name is None:
        errors.append(InputError("is required", "name"))
    problem = Problem(project=project, created_by=_user(user))
    _apply_fields(problem, change, errors)
    if errors:
        raise InvalidInput("invalid problem", errors=errors)
    problem.save()
    queued = _change_patterns(problem, change, user, errors)
    evaluation_schedule_after_commit(project.pk)
    return problem, queued


@transaction.atomic
def problem_update(*, problem: Problem, user: Any, change: ProblemChange) -> tuple[Problem, int]:
    """Change a problem's description, harm or status and add or remove patterns; new patterns are
    queued for labelling. Return the problem and how many items were queued."""
    # The project first, then the problem: the order evaluation locks them in.
    Project.objects.select_for_update(no_key=True).get(pk=problem.project_id)
    problem = (
        Problem.objects.select_for_update(of=("self",)).select_related("project").get(pk=problem.pk)
    )
    errors: list[InputError] = []
    _apply_fields(problem, change, errors)
    if errors:
        raise InvalidInput("invalid problem", errors=errors)
    problem.save()
    queued = _change_patterns(problem, change, user, errors)
    evaluation_schedule_after_commit(problem.project_id)
    return problem, queued
