"""Candidate models and their evaluation on problems against the latest trusted labels.

Every evaluation run recomputes the figures of every model version on every problem (and on the
project's test split) from the trusted labels of that moment, so figures side by side were always
computed on the same labels. Runs are scheduled after consensus, expert decisions, gold answers,
threshold changes, problem changes and prediction imports, debounced like consensus.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.exceptions import InputError, InvalidInput, NotFound
from core.text import unstorable
from labelling.models import (
    Evaluation,
    Item,
    ModelVersion,
    Prediction,
    Problem,
    ProblemItem,
    Project,
)
from labelling.numerics.problems import error_figures, priority
from labelling.services.debounce import recompute_soon, recompute_started

PREDICTION = Prediction._meta.db_table
TEST_SPLIT = "test"
CHUNK = 2000


def model_versions_record(*, project: Project, names: Iterable[str], at: datetime) -> None:
    """Record the model versions of an import: one upsert for all of them, whatever the rows."""
    rows = [
        ModelVersion(project=project, name=name, first_seen_at=at, last_import_at=at)
        for name in sorted(set(names))
    ]
    if rows:
        ModelVersion.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["project", "name"],
            update_fields=["last_import_at"],
        )


def _text(value: Any, field: str, limit: int, errors: list[InputError]) -> str:
    if not isinstance(value, str):
        errors.append(InputError("must be a string", field))
        return ""
    if len(value) > limit:
        errors.append(InputError(f"at most {limit} characters, got {len(value)}", field))
    if (reason := unstorable(value)) is not None:
        errors.append(InputError(reason, field))
    return value.strip()


@transaction.atomic
def model_version_update(
    *, project: Project, name: str, note: Any = None, link: Any = None, git_hash: Any = None
) -> ModelVersion:
    """Describe a candidate model: a note, a link to its code and data, its git hash."""
    # A name the database cannot hold (from a URL with %00) names no version.
    storable = unstorable(name) is None
    version = (
        ModelVersion.objects.select_for_update().filter(project=project, name=name).first()
        if storable
        else None
    )
    if version is None:
        raise NotFound(f"no model version {name!r} in the project's predictions")
    errors: list[InputError] = []
    for field, value, limit in (
        ("note", note, 5000),
        ("link", link, 500),
        ("git_hash", git_hash, 64),
    ):
        if value is not None:
            setattr(version, field, _text(value, field, limit, errors))
    if (
        git_hash
        and not errors
        and not all(c in "0123456789abcdef" for c in version.git_hash.lower())
    ):
        errors.append(InputError("must be hexadecimal (a git commit hash)", "git_hash"))
    if errors:
        raise InvalidInput("invalid model version description", errors=errors)
    version.save(update_fields=["note", "link", "git_hash"])
    return version


def trusted_labels(project: Project, item_ids: list[int]) -> dict[int, str]:
    """The trusted label of each of these items that has one: the expert's decision on a resolved
    item, else its gold answer, else the consensus of an approved item."""
    found: dict[int, str] = {}
    for start in range(0, len(item_ids), CHUNK):
        rows = (
            Item.objects.filter(
                project=project, pk__in=item_ids[start : start + CHUNK], deactivated_at=None
            )
            .exclude(state=Item.State.REMOVED)
            .values_list("pk", "state", "expert_label", "gold_label", "consensus__label")
        )
        for pk, state, expert, gold, consensus in rows:
            if state == Item.State.RESOLVED and expert:
                found[pk] = expert
            elif gold:
                found[pk] = gold
            elif state == Item.State.APPROVED and consensus:
                found[pk] = consensus
    return found


def _evaluated_sets(project: Project) -> dict[int | None, list[int]]:
    """Item ids of each problem, and of the test split under None."""
    sets: dict[int | None, list[int]] = defaultdict(list)
    for problem_id, item_id in ProblemItem.objects.filter(problem__project=project).values_list(
        "problem_id", "item_id"
    ):
        sets[problem_id].append(item_id)
    sets[None] = list(
        Item.objects.filter(project=project, split=TEST_SPLIT).values_list("pk", flat=True)
    )
    return sets


def _prediction_rows(item_ids: list[int]) -> Iterator[list[tuple[int, str, str]]]:
    """(item id, model version, probabilities as JSON text) of these items' predictions, in
    batches: on PostgreSQL one query (a few IN lists would scan the table once each)."""
    select = f"SELECT item_id, model_version, CAST(probabilities AS TEXT) FROM {PREDICTION} "
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(select + "WHERE item_id = ANY(%s)", [item_ids])
            yield cursor.fetchall()
            return
        for start in range(0, len(item_ids), CHUNK):
            chunk = item_ids[start : start + CHUNK]
            cursor.execute(select + f"WHERE item_id IN ({', '.join(['%s'] * len(chunk))})", chunk)
            yield cursor.fetchall()


def _scores(project: Project, item_ids: list[int]) -> dict[str, dict[int, float]]:
    """p(positive label) of each item, by model version."""
    positive = project.labels.index(project.positive_label)
    scores: dict[str, dict[int, float]] = defaultdict(dict)
    for rows in _prediction_rows(item_ids):
        # One parse of one JSON array is much faster than thousands of small ones.
        probabilities = orjson.loads("[" + ",".join(row[2] for row in rows) + "]")
        for (item_id, version, _), probs in zip(rows, probabilities, strict=True):
            scores[version][item_id] = float(probs[positive])
    return scores


def _evaluation(
    project: Project, version: ModelVersion, problem_id: int | None,
    pairs: list[tuple[bool, float]], now: datetime,
) -> Evaluation:  # fmt: skip
    y = np.fromiter((truth for truth, _ in pairs), bool, len(pairs))
    s = np.fromiter((score for _, score in pairs), float, len(pairs))
    figures = error_figures(y, s, project.threshold)
    return Evaluation(
        project=project, model_version=version, problem_id=problem_id, n=figures.n,
        positives=figures.positives, errors=figures.errors,
        false_positives=figures.false_positives, false_negatives=figures.false_negatives,
        error_rate=figures.error_rate, auc=figures.auc, threshold=project.threshold,
        computed_at=now,
    )  # fmt: skip


def _priorities(project: Project, rows: list[Evaluation]) -> None:
    """Each problem's priority from the latest model version evaluated on it."""
    latest: dict[int, Evaluation] = {}
    for row in rows:  # in the versions' time order
        if row.problem_id is not None:
            latest[row.problem_id] = row
    for problem in Problem.objects.filter(project=project):
        found = latest.get(problem.pk)
        value = priority(found.error_rate if found else None, problem.harm)
        if value != problem.priority:
            problem.priority = value
            problem.save(update_fields=["priority"])


@transaction.atomic
def evaluation_compute(*, project: Project) -> int:
    """Evaluate every model version on every problem and on the test split, on the trusted labels
    of now, replacing the figures stored before; return how many figures were stored."""
    Project.objects.select_for_update(no_key=True).get(pk=project.pk)
    project.refresh_from_db(fields=["threshold", "positive_label", "labels"])
    sets = _evaluated_sets(project)
    every = sorted({item_id for ids in sets.values() for item_id in ids})
    trusted = trusted_labels(project, every)
    scores = _scores(project, sorted(trusted))
    now = timezone.now()
    rows: list[Evaluation] = []
    for version in ModelVersion.objects.filter(project=project).order_by("first_seen_at", "id"):
        predicted = scores.get(version.name, {})
        for problem_id, ids in sets.items():
            pairs = [
                (trusted[i] == project.positive_label, predicted[i])
                for i in ids
                if i in trusted and i in predicted
            ]
            if pairs:
                rows.append(_evaluation(project, version, problem_id, pairs, now))
    Evaluation.objects.filter(project=project).delete()
    Evaluation.objects.bulk_create(rows, batch_size=CHUNK)
    _priorities(project, rows)
    return len(rows)


def evaluation_schedule(*, project_id: int) -> None:
    """Ask for the project's figures to be recomputed soon: one run per burst of changes.

    With in-process jobs, a project of at most INLINE_EVALUATION_MAX_PREDICTIONS predictions is
    evaluated at once (larger ones when `problems` runs). A failed enqueue is logged, never
    raised: the change that caused it is saved, and `problems` recomputes before it reports.
    """
    from labelling import tasks

    if not ModelVersion.objects.filter(project_id=project_id).exists():
        return
    if settings.CELERY_TASK_ALWAYS_EAGER:
        predictions = Prediction.objects.filter(item__project_id=project_id).count()
        if predictions <= settings.INLINE_EVALUATION_MAX_PREDICTIONS:
            evaluation_compute(project=Project.objects.get(pk=project_id))
        return
    recompute_soon(
        kind="evaluation", project_id=project_id, task=tasks.evaluate_project,
        seconds=settings.EVALUATION_DEBOUNCE_SECONDS,
    )  # fmt: skip


def evaluation_schedule_after_commit(project_id: int) -> None:
    """Schedule the evaluation once the current transaction commits (at once outside one)."""
    transaction.on_commit(lambda: evaluation_schedule(project_id=project_id))


def evaluation_run(*, project_id: int) -> None:
    """Run a scheduled evaluation (the Celery task's body)."""
    recompute_started(kind="evaluation", project_id=project_id)
    project = Project.objects.filter(pk=project_id).first()
    if project is not None:
        evaluation_compute(project=project)
