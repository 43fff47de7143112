"""Writing a validated prediction file with set-based SQL.

Every row goes first into a temporary staging table (PostgreSQL: one streaming COPY that a
second thread sends while this one parses; SQLite: batched inserts). The file is then checked
against itself and against the database, and merged into items and predictions with two
INSERT … SELECT statements. The caller holds one transaction around it all, so a file with any
error writes nothing.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

import numpy as np
from django.db import connection

if TYPE_CHECKING:
    from labelling.importing.parallel import Block
from django.db.backends.utils import CursorWrapper

from core.exceptions import InputError
from labelling.importing.predictions import PredictionRow, id_hash
from labelling.models import Item, Prediction

STAGING = "quorum_import_staging"
COLUMNS = (
    "line",
    "external_id",
    "payload",
    "content_hash",
    "source",
    "split",
    "model_version",
    "probabilities",
    "samples",
    "digest",
    "predicted_label",
    "confidence",
)
SQLITE_BATCH = 2000
COPY_BLOCK = 2000
MAX_CONFLICTS = 100
ITEM = Item._meta.db_table
PREDICTION = Prediction._meta.db_table


@dataclass(frozen=True)
class Staged:
    """What was staged: how many rows, and whether an external_id may occur more than once."""

    rows: int
    may_repeat: bool


@dataclass(frozen=True)
class MergeCounts:
    """What a merge added."""

    new_items: int
    new_predictions: int


def _row_values(row: PredictionRow) -> tuple[Any, ...]:
    return (
        row.line,
        row.external_id,
        row.payload_json,
        row.content_hash,
        row.source,
        row.split,
        row.model_version,
        row.probabilities_json,
        row.samples_json,
        row.digest,
        row.predicted_label,
        row.confidence,
    )


def _create_table(cursor: CursorWrapper) -> None:
    json_type = "jsonb" if connection.vendor == "postgresql" else "text"
    if connection.vendor == "postgresql":
        # Temporary tables live in per-session buffers, 8 MB by default: a large file would
        # spill to disk. The setting only takes effect before the session's first temporary
        # table, which is the case for a command or a worker's first import.
        cursor.execute("SET temp_buffers = '512MB'")
    cursor.execute(f"DROP TABLE IF EXISTS {STAGING}")
    cursor.execute(
        f"CREATE TEMPORARY TABLE {STAGING} (line integer, external_id text, payload {json_type}, "
        f"content_hash text, source text, split text, model_version text, "
        f"probabilities {json_type}, samples {json_type}, digest text, predicted_label text, "
        f"confidence double precision)"
    )


def _copy_text(value: str) -> str:
    """A value escaped for COPY's text format."""
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return (
            value.replace("\\", "\\\\")
            .replace("\t", "\\t")
            .replace("\n", "\\n")
            .replace("\r", "\\r")
        )
    return value


def _copy_json(value: str | None) -> str:
    """JSON text escaped for COPY's text format; None is COPY's NULL."""
    # orjson escapes control characters inside strings, so its output holds no raw tab,
    # newline or carriage return: only backslashes need doubling.
    return value.replace("\\", "\\\\") if value is not None else "\\N"


def copy_line(row: PredictionRow) -> str:
    """One staging row in COPY's text format (hashes and numbers need no escaping)."""
    texts = row.external_id + row.source + row.split + row.model_version + row.predicted_label
    if not ("\\" in texts or "\t" in texts or "\n" in texts or "\r" in texts):
        # The common case: no text field needs escaping, so one check serves all five.
        return (
            f"{row.line}\t{row.external_id}\t{_copy_json(row.payload_json)}\t{row.content_hash}"
            f"\t{row.source}\t{row.split}\t{row.model_version}\t{row.probabilities_json}"
            f"\t{_copy_json(row.samples_json)}\t{row.digest}\t{row.predicted_label}"
            f"\t{row.confidence!r}\n"
        )
    return (
        f"{row.line}\t{_copy_text(row.external_id)}\t{_copy_json(row.payload_json)}"
        f"\t{row.content_hash}\t{_copy_text(row.source)}\t{_copy_text(row.split)}"
        f"\t{_copy_text(row.model_version)}\t{row.probabilities_json}"
        f"\t{_copy_json(row.samples_json)}\t{row.digest}"
        f"\t{_copy_text(row.predicted_label)}\t{row.confidence!r}\n"
    )


def _load_postgres(cursor: CursorWrapper, rows: Iterable[PredictionRow]) -> int:
    from psycopg.copy import QueuedLibpqWriter

    count = 0
    raw = cursor.cursor
    statement = f"COPY {STAGING} ({', '.join(COLUMNS)}) FROM STDIN"
    # Whole blocks of pre-formatted lines: far fewer calls than one write_row a row, and a
    # second thread sends each block while this one parses the next.
    with raw.copy(statement, writer=QueuedLibpqWriter(raw)) as copy:
        iterator: Iterator[PredictionRow] = iter(rows)
        while block := [copy_line(row) for row in islice(iterator, COPY_BLOCK)]:
            copy.write("".join(block))
            count += len(block)
    return count


def _load_sqlite(cursor: CursorWrapper, rows: Iterable[PredictionRow]) -> int:
    count = 0
    statement = f"INSERT INTO {STAGING} VALUES ({', '.join(['%s'] * len(COLUMNS))})"
    iterator: Iterator[PredictionRow] = iter(rows)
    while batch := [_row_values(row) for row in islice(iterator, SQLITE_BATCH)]:
        cursor.executemany(statement, batch)
        count += len(batch)
    return count


def _tracked(rows: Iterable[PredictionRow], hashes: array[int]) -> Iterator[PredictionRow]:
    for row in rows:
        hashes.append(id_hash(row.external_id))
        yield row


def _may_repeat(hashes: array[int]) -> bool:
    # 8 bytes a row, whatever the file's size. Equal hashes of different ids only send the
    # file down the slower path that handles repeats exactly; they never change the result.
    values = np.frombuffer(hashes, dtype=np.int64)
    return bool(values.size) and np.unique(values).size < values.size


def _after_load(cursor: CursorWrapper) -> None:
    if connection.vendor == "postgresql":
        # Temporary tables are never auto-analysed; without statistics the planner picks
        # nested loops over a million rows.
        cursor.execute(f"ANALYZE {STAGING}")
        # Room for the sorts of the checks and the merge to stay in memory.
        cursor.execute("SET LOCAL work_mem = '128MB'")


def stage(cursor: CursorWrapper, rows: Iterable[PredictionRow]) -> Staged:
    """Create the staging table and fill it with `rows`."""
    _create_table(cursor)
    hashes: array[int] = array("q")
    load = _load_postgres if connection.vendor == "postgresql" else _load_sqlite
    count = load(cursor, _tracked(rows, hashes))
    _after_load(cursor)
    return Staged(rows=count, may_repeat=_may_repeat(hashes))


def stage_blocks(cursor: CursorWrapper, blocks: Iterable[Block]) -> Staged:
    """Create the staging table and COPY pre-formatted blocks into it (PostgreSQL only)."""
    from psycopg.copy import QueuedLibpqWriter

    _create_table(cursor)
    hashes: array[int] = array("q")
    count = 0
    raw = cursor.cursor
    statement = f"COPY {STAGING} ({', '.join(COLUMNS)}) FROM STDIN"
    with raw.copy(statement, writer=QueuedLibpqWriter(raw)) as copy:
        for block in blocks:
            copy.write(block.text)
            hashes.frombytes(block.hashes)
            count += block.rows
    _after_load(cursor)
    return Staged(rows=count, may_repeat=_may_repeat(hashes))


def drop(cursor: CursorWrapper) -> None:
    """Remove the staging table."""
    cursor.execute(f"DROP TABLE IF EXISTS {STAGING}")


def _conflicts_within(cursor: CursorWrapper, keys: str, value: str) -> list[tuple[Any, ...]]:
    # The first line of each distinct value per key; two or more distinct values are a conflict.
    cursor.execute(
        f"WITH firsts AS (SELECT {keys}, {value}, MIN(line) AS line FROM {STAGING} "
        f"GROUP BY {keys}, {value}) "
        f"SELECT {keys}, MIN(line), MAX(line) FROM firsts GROUP BY {keys} "
        f"HAVING COUNT(*) > 1 ORDER BY MAX(line) LIMIT {MAX_CONFLICTS}"
    )
    return cursor.fetchall()


def file_conflicts(cursor: CursorWrapper) -> list[InputError]:
    """Rows of the file that contradict an earlier row of the same file."""
    errors = [
        InputError(
            f"external_id {external_id!r} already appeared on line {first} "
            "with a different payload",
            field="payload",
            line=line,
        )
        for external_id, first, line in _conflicts_within(cursor, "external_id", "content_hash")
    ]
    errors += [
        InputError(
            f"external_id {external_id!r} with model_version {version!r} already appeared on line "
            f"{first} with different probabilities or samples",
            field="probabilities",
            line=line,
        )
        for external_id, version, first, line in _conflicts_within(
            cursor, "external_id, model_version", "digest"
        )
    ]
    return sorted(errors, key=lambda e: e.line or 0)


def database_conflicts(cursor: CursorWrapper, project_id: int) -> list[InputError]:
    """Rows of the file that contradict what the project already holds."""
    cursor.execute(
        f"SELECT s.external_id, MIN(s.line) FROM {STAGING} s JOIN {ITEM} i "
        f"ON i.project_id = %s AND i.external_id = s.external_id "
        f"WHERE i.content_hash <> s.content_hash GROUP BY s.external_id "
        f"ORDER BY MIN(s.line) LIMIT {MAX_CONFLICTS}",
        [project_id],
    )
    errors = [
        InputError(
            f"item {external_id!r} already exists with a different payload (an item's payload "
            "never changes; give changed content a new external_id)",
            field="payload",
            line=line,
        )
        for external_id, line in cursor.fetchall()
    ]
    cursor.execute(
        f"SELECT s.external_id, s.model_version, MIN(s.line) FROM {STAGING} s JOIN {ITEM} i "
        f"ON i.project_id = %s AND i.external_id = s.external_id JOIN {PREDICTION} p "
        f"ON p.item_id = i.id AND p.model_version = s.model_version WHERE p.digest <> s.digest "
        f"GROUP BY s.external_id, s.model_version ORDER BY MIN(s.line) LIMIT {MAX_CONFLICTS}",
        [project_id],
    )
    errors += [
        InputError(
            f"item {external_id!r} already has a prediction of model_version {version!r} with "
            "different probabilities (use a new model_version for a new model)",
            field="probabilities",
            line=line,
        )
        for external_id, version, line in cursor.fetchall()
    ]
    return sorted(errors, key=lambda e: e.line or 0)


def _first_rows(partition: str, may_repeat: bool) -> str:
    """The staged rows to insert from: the first row per key when keys may repeat."""
    if not may_repeat:
        return f"{STAGING} f WHERE"
    return (
        f"(SELECT *, ROW_NUMBER() OVER (PARTITION BY {partition} ORDER BY line) AS rn "
        f"FROM {STAGING}) f WHERE f.rn = 1 AND"
    )


def merge(
    cursor: CursorWrapper, project_id: int, now: datetime, *, may_repeat: bool, fresh: bool
) -> MergeCounts:
    """Insert the staged items and predictions the project does not have yet.

    `fresh` says the project had no items before this import: every prediction is then new,
    and a million index probes for existing ones can be skipped.
    """
    stamp = connection.ops.adapt_datetimefield_value(now)
    unseen = (
        ""
        if fresh
        else f"AND NOT EXISTS (SELECT 1 FROM {PREDICTION} p WHERE p.item_id = i.id "
        f"AND p.model_version = f.model_version)"
    )
    # Plain inserts of the rows not there yet: the caller holds the project's lock, so no other
    # import races these; the unique constraints stay as the last line of defence. (ON CONFLICT
    # DO NOTHING costs a speculative insertion per row, several times slower here.)
    cursor.execute(
        f"INSERT INTO {ITEM} (project_id, external_id, payload, content_hash, source, split, "
        f"created_at, deactivated_at) "
        f"SELECT %s, f.external_id, f.payload, f.content_hash, f.source, f.split, %s, NULL "
        f"FROM {_first_rows('external_id', may_repeat)} NOT EXISTS (SELECT 1 FROM {ITEM} i "
        f"WHERE i.project_id = %s AND i.external_id = f.external_id)",
        [project_id, stamp, project_id],
    )
    new_items = cursor.rowcount
    cursor.execute(
        f"INSERT INTO {PREDICTION} (item_id, model_version, probabilities, samples, "
        f"predicted_label, confidence, digest, created_at) "
        f"SELECT i.id, f.model_version, f.probabilities, f.samples, f.predicted_label, "
        f"f.confidence, f.digest, %s "
        f"FROM {ITEM} i, {_first_rows('external_id, model_version', may_repeat)} "
        f"i.project_id = %s AND i.external_id = f.external_id {unseen}",
        [stamp, project_id],
    )
    return MergeCounts(new_items=new_items, new_predictions=cursor.rowcount)
