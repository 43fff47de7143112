"""Gold answers: items whose label is known, used to check labellers and to pick thresholds."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import IO, Any

from django.db import transaction
from django.utils import timezone

from core.exceptions import InputError, InvalidInput
from labelling.importing.gold import iter_gold_rows
from labelling.importing.rows import ErrorLog
from labelling.models import Item, Project
from labelling.services.decisions import DECIDED_STATES, decision_time
from labelling.services.evaluation import evaluation_schedule_after_commit

FAILED = "the gold file has errors; nothing was imported"
LOOKUP_CHUNK = 2000


@dataclass(frozen=True)
class GoldResult:
    """What a gold import did."""

    rows: int
    marked: int
    changed: int
    unchanged: int

    def as_dict(self) -> dict[str, Any]:
        """The counts as the API reports them."""
        return asdict(self)


def _answers(
    project: Project, stream: IO[bytes], fmt: str, log: ErrorLog
) -> dict[str, tuple[str, int]]:
    """external_id → (label, line of its first row), with repeats that disagree reported."""
    answers: dict[str, tuple[str, int]] = {}
    for row in iter_gold_rows(stream, fmt, project.labels, log):
        seen = answers.setdefault(row.external_id, (row.label, row.line))
        if seen[0] != row.label:
            log.add(
                InputError(
                    f"external_id {row.external_id!r} already has gold label {seen[0]!r} on "
                    f"line {seen[1]}",
                    field="label",
                    line=row.line,
                )
            )
    return answers


@transaction.atomic
def gold_import(*, project: Project, stream: IO[bytes], fmt: str) -> GoldResult:
    """Mark items as gold with their known answers; on any error write nothing."""
    log = ErrorLog()
    answers = _answers(project, stream, fmt, log)
    log.raise_if_any(FAILED)
    if not answers:
        raise InvalidInput("the gold file holds no rows; nothing was imported")
    ids = list(answers)
    items: dict[str, Item] = {}
    for start in range(0, len(ids), LOOKUP_CHUNK):
        chunk = Item.objects.filter(
            project=project, external_id__in=ids[start : start + LOOKUP_CHUNK]
        )
        items.update((item.external_id, item) for item in chunk)
    for external_id in (i for i in ids if i not in items):
        log.add(
            InputError(
                f"no item {external_id!r} in the project",
                field="external_id",
                line=answers[external_id][1],
            )
        )
    log.raise_if_any(FAILED)
    now = timezone.now()
    labels = {external_id: label for external_id, (label, _) in answers.items()}
    updates = [item for item in items.values() if item.gold_label != labels[item.external_id]]
    changed = sum(1 for item in updates if item.gold_label)
    decided = decision_time(project_id=project.pk) if updates else None
    for item in updates:
        item.gold_label, item.gold_set_at = labels[item.external_id], now
        # A decided item's release label is the gold answer now (unless an expert's comes first).
        if item.state in DECIDED_STATES and not item.expert_label:
            item.decided_at = decided
    Item.objects.bulk_update(updates, ["gold_label", "gold_set_at", "decided_at"], batch_size=2000)
    if updates:
        evaluation_schedule_after_commit(project.pk)
    return GoldResult(
        rows=len(answers),
        marked=len(updates) - changed,
        changed=changed,
        unchanged=len(answers) - len(updates),
    )
