"""Importing prediction files: validate every row, then write all of them or none."""

from __future__ import annotations

import io
import logging
import os
import time
from dataclasses import asdict, dataclass
from typing import IO, Any

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from core.exceptions import InvalidInput
from labelling.importing import staging
from labelling.importing.parallel import BlockParser, worth_parallel
from labelling.importing.predictions import iter_prediction_rows
from labelling.importing.rows import ErrorLog, Progress
from labelling.models import Project
from labelling.services.evaluation import (
    evaluation_schedule_after_commit,
    model_versions_record,
)

logger = logging.getLogger("quorum.imports")
FAILED = "the file has errors; nothing was imported"


@dataclass(frozen=True)
class ImportResult:
    """What an import did."""

    rows: int
    new_items: int
    new_predictions: int
    unchanged: int

    def as_dict(self) -> dict[str, Any]:
        """The counts as the API and the job report them."""
        return asdict(self)


def _size(stream: IO[bytes]) -> int:
    try:
        return os.fstat(stream.fileno()).st_size
    except (OSError, AttributeError, io.UnsupportedOperation):
        return 0


def _stage(
    cursor: CursorWrapper,
    project: Project,
    stream: IO[bytes],
    fmt: str,
    log: ErrorLog,
    progress: Progress | None,
) -> staging.Staged:
    """Parse the file into the staging table: in worker processes when it is large enough."""
    if connection.vendor == "postgresql" and fmt == "jsonl" and worth_parallel(_size(stream)):
        with BlockParser(project.labels, log) as parser:
            return staging.stage_blocks(cursor, parser.blocks(stream, progress))
    return staging.stage(cursor, iter_prediction_rows(stream, fmt, project.labels, log, progress))


@transaction.atomic
def predictions_import(
    *, project: Project, stream: IO[bytes], fmt: str, progress: Progress | None = None
) -> ImportResult:
    """Import a prediction file; on any error raise InvalidInput and write nothing."""
    # One import per project at a time: the checks against existing rows then stay true.
    Project.objects.select_for_update(no_key=True).get(pk=project.pk)
    fresh = not project.items.exists()
    log = ErrorLog()
    # On any error the transaction rolls back, and the staging table with it.
    with connection.cursor() as cursor:
        started = time.perf_counter()
        staged = _stage(cursor, project, stream, fmt, log, progress)
        rows = staged.rows
        log.raise_if_any(FAILED)
        if rows == 0:
            raise InvalidInput("the file holds no prediction rows; nothing was imported")
        parsed = time.perf_counter()
        # Rows of one file can only contradict each other where an external_id repeats.
        conflicts = staging.file_conflicts(cursor) if staged.may_repeat else []
        for error in conflicts + staging.database_conflicts(cursor, project.pk):
            log.add(error)
        log.raise_if_any(FAILED)
        checked = time.perf_counter()
        now = timezone.now()
        counts = staging.merge(cursor, project.pk, now, may_repeat=staged.may_repeat, fresh=fresh)
        cursor.execute(f"SELECT DISTINCT model_version FROM {staging.STAGING}")
        versions = [row[0] for row in cursor.fetchall()]
        staging.drop(cursor)
        logger.debug(
            "import into %s: %d rows; parse and stage %.2f s, checks %.2f s, merge %.2f s",
            project.slug,
            rows,
            parsed - started,
            checked - parsed,
            time.perf_counter() - checked,
        )
    # One upsert for the file's model versions; their figures on the problems follow.
    model_versions_record(project=project, names=versions, at=now)
    evaluation_schedule_after_commit(project.pk)
    return ImportResult(
        rows=rows,
        new_items=counts.new_items,
        new_predictions=counts.new_predictions,
        unchanged=rows - counts.new_predictions,
    )
