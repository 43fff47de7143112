"""Queueing: choose which predictions go to people, under a stored, versioned policy."""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import orjson
from django.db import connection, transaction
from django.db.models import Max, Min

from core.exceptions import InputError, InvalidInput
from labelling import selectors
from labelling.models import Item, Prediction, Project, QueueEntry, QueuePolicy
from labelling.numerics.selection import select_items
from labelling.numerics.uncertainty import pack_samples
from labelling.policy import DEFAULT_POLICY, Policy, parse_policy
from labelling.services.floors import queue_reopened

logger = logging.getLogger("quorum.queue")
ITEM, PREDICTION, ENTRY = (m._meta.db_table for m in (Item, Prediction, QueueEntry))
CROSSINGS_LISTED = 50
# Queued entries after which the leasing tables' statistics are refreshed at once.
ANALYZE_AFTER = 1000


@dataclass(frozen=True)
class QueueResult:
    """What a queue run did: how many items each rule took, and what it noticed."""

    policy_version: int
    model_version: str
    considered: int
    queued: int
    by_rule: list[dict[str, Any]]
    crossed_threshold: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The result as the API and the job report it."""
        return asdict(self)


def queue_policy_save(*, project: Project, policy: Policy, user: Any = None) -> QueuePolicy:
    """Store a policy as the project's next version, or return the current one if it is equal."""
    current = project.queue_policies.order_by("-version").first()
    if (
        current is not None
        and current.rules == list(policy.rules)
        and current.budget == policy.budget
    ):
        return current
    return QueuePolicy.objects.create(
        project=project,
        version=(current.version + 1) if current else 1,
        rules=list(policy.rules),
        budget=policy.budget,
        created_by=user if getattr(user, "is_authenticated", False) else None,
    )


def _current_policy(project: Project, budget: int | None) -> Policy:
    stored = project.queue_policies.order_by("-version").first()
    data = {"rules": stored.rules, "budget": stored.budget} if stored else DEFAULT_POLICY
    return parse_policy(data, budget=budget)


def _eligible(project: Project, model_version: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids and probabilities of the active, unqueued items that this model version predicted."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT p.item_id, CAST(p.probabilities AS TEXT) FROM {PREDICTION} p "
            f"JOIN {ITEM} i ON i.id = p.item_id WHERE i.project_id = %s AND p.model_version = %s "
            f"AND i.deactivated_at IS NULL AND NOT EXISTS "
            f"(SELECT 1 FROM {ENTRY} q WHERE q.item_id = i.id) ORDER BY p.item_id",
            [project.pk, model_version],
        )
        rows = cursor.fetchall()
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    # One parse of one JSON array is much faster than a million small ones.
    matrix = orjson.loads("[" + ",".join(row[1] for row in rows) + "]") if rows else []
    probs = np.asarray(matrix, dtype=np.float64).reshape(len(rows), len(project.labels))
    return ids, probs


def _samples(project: Project, ids: np.ndarray, model_version: str) -> np.ndarray:
    """The prediction samples of these items as an n × m × k array (NaN where absent)."""
    found = Prediction.objects.filter(
        item__project=project, model_version=model_version, samples__isnull=False
    ).values_list("item_id", "samples")
    position = {int(item_id): i for i, item_id in enumerate(ids)}
    values: list[list[float]] = []
    rows: list[int] = []
    for item_id, samples in found.iterator(chunk_size=5000):
        if samples and item_id in position:
            values.extend(samples)
            rows.extend([position[item_id]] * len(samples))
    k = len(project.labels)
    table = np.asarray(values, dtype=np.float64).reshape(len(values), k)
    return pack_samples(table, np.asarray(rows, dtype=np.intp), len(ids))


def _seed(project: Project, policy_version: int, model_version: str, queued: int) -> int:
    # Reproducible draws for the random rules, different for each run on a project.
    key = f"{project.pk}:{policy_version}:{model_version}:{queued}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def _select(
    project: Project, policy: Policy, probs: np.ndarray, samples: np.ndarray | None, seed: int
) -> Any:
    binary = len(project.labels) == 2
    try:
        return select_items(
            probs,
            list(policy.rules),
            samples=samples,
            positive_index=project.labels.index(project.positive_label) if binary else None,
            threshold=project.threshold,
            budget=policy.budget,
            seed=seed,
        )
    except ValueError as exc:
        if str(exc).startswith("samples"):
            rule = next(
                i for i, r in enumerate(policy.rules) if r.get("measure") == "mutual_information"
            )
            raise InvalidInput(
                "the queue policy cannot be applied",
                errors=[
                    InputError(
                        "mutual_information needs predictions with `samples`, and none of the "
                        "eligible predictions has them",
                        field=f"rules[{rule}].measure",
                    )
                ],
            ) from None
        raise


def _threshold_crossings(project: Project, model_version: str) -> list[str]:
    """Queued items whose prediction under this version falls on the other side of the threshold."""
    if len(project.labels) != 2:
        return []
    positive = project.labels.index(project.positive_label)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT i.external_id, CAST(old.probabilities AS TEXT), "
            f"CAST(new.probabilities AS TEXT) FROM {ENTRY} q JOIN {ITEM} i ON i.id = q.item_id "
            f"JOIN {PREDICTION} old ON old.item_id = q.item_id "
            f"AND old.model_version = q.model_version "
            f"JOIN {PREDICTION} new ON new.item_id = q.item_id AND new.model_version = %s "
            f"WHERE q.project_id = %s AND q.model_version <> %s ORDER BY q.priority",
            [model_version, project.pk, model_version],
        )
        rows = cursor.fetchall()
    t = project.threshold
    return [
        external_id
        for external_id, old, new in rows
        if (orjson.loads(old)[positive] >= t) != (orjson.loads(new)[positive] >= t)
    ]


@transaction.atomic
def queue_select(
    *,
    project: Project,
    policy: Policy | None = None,
    budget: int | None = None,
    model_version: str | None = None,
    user: Any = None,
) -> QueueResult:
    """Queue the project's predictions that need people, by the given or the current policy."""
    Project.objects.select_for_update(no_key=True).get(pk=project.pk)
    started = time.perf_counter()
    chosen = (
        parse_policy(policy.as_json(), budget=budget)
        if policy
        else _current_policy(project, budget)
    )
    stored = queue_policy_save(project=project, policy=chosen, user=user)
    version = model_version or selectors.latest_model_version(project)
    if version is None:
        raise InvalidInput("the project has no predictions to queue: import some first")
    ids, probs = _eligible(project, version)
    samples = _samples(project, ids, version) if chosen.needs_samples() and ids.size else None
    already = QueueEntry.objects.filter(project=project).count()
    picked = _select(
        project, chosen, probs, samples, _seed(project, stored.version, version, already)
    )
    _store_entries(project, stored, version, ids[picked.indices], picked)
    result = QueueResult(
        policy_version=stored.version,
        model_version=version,
        considered=int(ids.size),
        queued=int(picked.indices.size),
        by_rule=[
            {"rule": rule["rule"], "queued": int(count)}
            for rule, count in zip(chosen.rules, picked.rule_counts, strict=True)
        ],
        crossed_threshold=_threshold_crossings(project, version)[:CROSSINGS_LISTED],
    )
    logger.debug(
        "queue %s: %s in %.2f s", project.slug, result.by_rule, time.perf_counter() - started
    )
    return result


def _store_entries(
    project: Project, policy: QueuePolicy, model_version: str, item_ids: np.ndarray, picked: Any
) -> None:
    last = QueueEntry.objects.filter(project=project).aggregate(last=Max("priority"))["last"] or 0
    names = [rule["rule"] for rule in policy.rules]
    QueueEntry.objects.bulk_create(
        (
            QueueEntry(
                project=project,
                item_id=int(item_id),
                rule=names[int(rule)],
                score=float(score),
                policy=policy,
                model_version=model_version,
                priority=last + position + 1,
                needed=project.overlap_min,
            )
            for position, (item_id, rule, score) in enumerate(
                zip(item_ids, picked.rule_index, picked.scores, strict=True)
            )
        ),
        batch_size=5000,
    )
    Item.objects.filter(project=project, state="", queue_entry__isnull=False).update(
        state=Item.State.QUEUED
    )
    if connection.vendor == "postgresql" and item_ids.size >= ANALYZE_AFTER:
        # Leasing plans its query from these tables' statistics; after a large queueing they
        # are stale until autovacuum comes round, and a stale plan costs every lease 100 ms.
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {ENTRY}, {ITEM}")


@transaction.atomic
def queue_items_add(*, project: Project, item_ids: list[int], rule: str, user: Any = None) -> int:
    """Queue these items ahead of the rest under the current policy; items already queued or
    labelled (any labelling state) or with a gold answer are left alone. Return how many."""
    Project.objects.select_for_update(no_key=True).get(pk=project.pk)
    waiting = list(
        Item.objects.filter(
            project=project, pk__in=item_ids, queue_entry__isnull=True, gold_label="", state=""
        )
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if not waiting:
        return 0
    stored = queue_policy_save(project=project, policy=_current_policy(project, None), user=user)
    first = QueueEntry.objects.filter(project=project).aggregate(first=Min("priority"))["first"]
    start = (first or 1) - len(waiting)
    QueueEntry.objects.bulk_create(
        QueueEntry(
            project=project, item_id=item_id, rule=rule, score=0.0, policy=stored,
            model_version=selectors.latest_model_version(project) or "",
            priority=start + position, needed=project.overlap_min,
        )
        for position, item_id in enumerate(waiting)
    )  # fmt: skip
    Item.objects.filter(pk__in=waiting, state="").update(state=Item.State.QUEUED)
    # Ahead of every labeller's floor. (Entries queued by a policy run go behind the rest, below
    # every floor, and need no such call.)
    queue_reopened([project.pk])
    return len(waiting)
