"""Labels collected elsewhere: import them, with their labellers and, if need be, their items."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import IO, Any

from django.db import transaction
from django.utils import timezone

from core.exceptions import InputError, InvalidInput
from labelling.importing.labels import LabelRow, iter_label_rows
from labelling.importing.predictions import content_hash
from labelling.importing.rows import ErrorLog
from labelling.models import Item, Label, Labeller, Project
from labelling.services.leasing import entries_recount

FAILED = "the label file has errors; nothing was imported"
IMPORT_PLATFORM = "import"
CHUNK = 2000
EMPTY_PAYLOAD_HASH = content_hash({})


@dataclass(frozen=True)
class LabelImportResult:
    """What a label import did."""

    rows: int
    new_items: int
    new_labellers: int
    new_labels: int
    unchanged: int
    batch: str

    def as_dict(self) -> dict[str, Any]:
        """The counts as the API reports them."""
        return asdict(self)


def _unique_rows(rows: Iterable[LabelRow], log: ErrorLog) -> dict[tuple[str, str], LabelRow]:
    """One row per (item, labeller); a second, different answer is an error."""
    seen: dict[tuple[str, str], LabelRow] = {}
    for row in rows:
        first = seen.setdefault((row.external_id, row.labeller), row)
        if first.label != row.label:
            log.add(
                InputError(
                    f"labeller {row.labeller!r} already answered {first.label!r} for "
                    f"{row.external_id!r} on line {first.line}",
                    field="label",
                    line=row.line,
                )
            )
    return seen


def _chunks(values: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(values), CHUNK):
        yield values[start : start + CHUNK]


def _items(project: Project, external_ids: list[str]) -> tuple[dict[str, int], int]:
    """Item ids by external id, creating the unknown ones (empty payload, source "import")."""
    found: dict[str, int] = {}
    for chunk in _chunks(external_ids):
        rows = Item.objects.filter(project=project, external_id__in=chunk)
        found.update(rows.values_list("external_id", "pk"))
    now = timezone.now()
    missing = [e for e in external_ids if e not in found]
    created = Item.objects.bulk_create(
        [
            Item(
                project=project,
                external_id=e,
                payload={},
                content_hash=EMPTY_PAYLOAD_HASH,
                source=IMPORT_PLATFORM,
                created_at=now,
                state=Item.State.COLLECTING,
            )
            for e in missing
        ],
        batch_size=CHUNK,
    )
    if created and created[0].pk is None:
        # SQLite before 3.35 returns no ids from a bulk insert: read them back.
        return _items(project, external_ids)[0], len(missing)
    found.update((item.external_id, item.pk) for item in created)
    return found, len(missing)


def _labellers(project: Project, worker_ids: list[str]) -> tuple[dict[str, int], int]:
    """Labeller ids by worker id, creating one outside labeller per unknown worker id."""
    existing = Labeller.objects.filter(project=project, platform=IMPORT_PLATFORM)
    found = dict(existing.values_list("worker_id", "pk"))
    missing = [w for w in worker_ids if w not in found]
    for labeller in Labeller.objects.bulk_create(
        [Labeller(project=project, platform=IMPORT_PLATFORM, worker_id=w) for w in missing],
        batch_size=CHUNK,
    ):
        found[labeller.worker_id] = labeller.pk
    if missing and any(found.get(w) is None for w in missing):
        found = dict(existing.values_list("worker_id", "pk"))
    return found, len(missing)


def _existing_labels(item_ids: list[int]) -> dict[tuple[int, int], str]:
    """The valid labels these items already have, by (item, labeller)."""
    found: dict[tuple[int, int], str] = {}
    for start in range(0, len(item_ids), CHUNK):
        labels = Label.objects.filter(
            item_id__in=item_ids[start : start + CHUNK], state=Label.State.VALID
        )
        found.update(
            ((i, w), v) for i, w, v in labels.values_list("item_id", "labeller_id", "value")
        )
    return found


@transaction.atomic
def labels_import(*, project: Project, stream: IO[bytes], fmt: str) -> LabelImportResult:
    """Record labels collected elsewhere; on any error write nothing."""
    Project.objects.select_for_update(no_key=True).get(pk=project.pk)
    log = ErrorLog()
    rows = _unique_rows(iter_label_rows(stream, fmt, project.labels, log), log)
    log.raise_if_any(FAILED)
    if not rows:
        raise InvalidInput("the label file holds no label rows; nothing was imported")
    items, new_items = _items(project, sorted({e for e, _ in rows}))
    labellers, new_labellers = _labellers(project, sorted({w for _, w in rows}))
    existing = _existing_labels(sorted(items.values()))
    batch = f"import-{timezone.now():%Y%m%dT%H%M%S.%f}"
    new: list[Label] = []
    for (external_id, worker), row in rows.items():
        key = (items[external_id], labellers[worker])
        if key not in existing:
            new.append(_label(project, key, row, batch))
        elif existing[key] != row.label:
            log.add(
                InputError(
                    f"labeller {worker!r} already has the label {existing[key]!r} for "
                    f"{external_id!r}",
                    field="label",
                    line=row.line,
                )
            )
    log.raise_if_any(FAILED)
    Label.objects.bulk_create(new, batch_size=CHUNK)
    # Items that had no labelling state (predicted, never queued) are now being labelled.
    labelled = sorted({label.item_id for label in new})
    entries_recount(item_ids=labelled)
    for start in range(0, len(labelled), CHUNK):
        Item.objects.filter(pk__in=labelled[start : start + CHUNK], state="").update(
            state=Item.State.COLLECTING
        )
    return LabelImportResult(
        rows=len(rows),
        new_items=new_items,
        new_labellers=new_labellers,
        new_labels=len(new),
        unchanged=len(rows) - len(new),
        batch=batch,
    )


def _label(project: Project, key: tuple[int, int], row: LabelRow, batch: str) -> Label:
    item_id, labeller_id = key
    return Label(
        project=project,
        item_id=item_id,
        labeller_id=labeller_id,
        value=row.label,
        source=IMPORT_PLATFORM,
        batch=batch,
        duration_ms=row.duration_ms,
        created_at=row.created_at or timezone.now(),
    )
