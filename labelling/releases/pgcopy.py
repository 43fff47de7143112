"""On PostgreSQL, release files are written by the database: one COPY … TO STDOUT whose rows are
the finished lines, streamed straight through the sha256 into the file.

Python building each row took about 60 µs; PostgreSQL builds the same line in a few, so a
million-row release is bound by the query, not by the interpreter. The lines hold the same fields
in the same order as the Python writer's (labelling/releases/formats.py, used on SQLite); payload
keys come in jsonb's order (shorter keys first) rather than alphabetically.

A large release is written by two COPYs at once, on two connections that share one snapshot
(`pg_export_snapshot()`): the items below the middle external id on this connection, the rest on
a second one into a spool file, appended after the first half. Both cores work, and the bytes are
those of one COPY, since every line is built from its own item and the order is by external id.
"""

from __future__ import annotations

import re
import tempfile
import threading
from collections.abc import Callable, Generator
from typing import IO, Any

import orjson
from django.db import connection

from labelling.models import Project
from labelling.releases.rows import (
    FIELDS,
    ITEM,
    LABEL,
    Pseudonyms,
    Selection,
    approved_at_sql,
    bytewise,
    final_label_sql,
    from_sql,
    label_source_sql,
)

# COPY's csv format with a delimiter and a quote that JSON text never holds raw (control
# characters are always escaped in JSON): each line comes out byte for byte as built.
VERBATIM = "FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02'"
# For the release's transaction (on every connection that writes it): sorts and hashes of a
# million wide rows in memory rather than in batches on disk, no JIT (its compile time outweighs
# what it saves here), and parallel workers for the scans, joins and sorts (PostgreSQL's default
# costs keep a COPY's query on one core; the final ORDER BY still fixes the bytes).
RELEASE_SETTINGS = (
    ("work_mem", "128MB"),
    ("jit", "off"),
    ("parallel_setup_cost", "0"),
    ("parallel_tuple_cost", "0.0001"),
)
# From this many rows, a release is written as two ranges on two connections at once.
SPLIT_FROM_ROWS = 200_000
SPOOL_READ = 1 << 20
SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")


def _ts(column: str) -> str:
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _json_text(expr: str) -> str:
    return f"COALESCE(to_json({expr})::text, 'null')"


def _probabilities(labels: list[str]) -> tuple[str, list[Any]]:
    """A JSON object {label: p} from the stored list, keys in the project's label order."""
    parts, params = [], []
    for index, label in enumerate(labels):
        key = ("{" if index == 0 else ",") + orjson.dumps(label).decode() + ":"
        parts.append(f"%s || (p.probabilities ->> {index})")
        params.append(key)
    body = " || ".join(parts) + " || '}'"
    return f"CASE WHEN p.probabilities IS NULL THEN NULL ELSE {body} END", params


def _labellers(
    project: Project, labeller_ids: list[int], chosen: Selection
) -> tuple[str, list[Any]]:
    """Per selected item, the JSON list of its valid labels' pseudonymous labeller ids, sorted."""
    names = Pseudonyms(project)
    sql = (
        'SELECT lb.item_id, json_agg(ps.name ORDER BY ps.name COLLATE "C")::text AS labellers, '
        f"MAX(lb.created_at) AS last_label_at FROM {LABEL} lb "
        "JOIN unnest(%s::bigint[], %s::text[]) AS ps(id, name) ON ps.id = lb.labeller_id "
        "WHERE lb.project_id = %s AND lb.state = 'valid' "
        f"AND lb.item_id IN (SELECT i.id FROM {ITEM} i WHERE {chosen.where}) GROUP BY lb.item_id"
    )
    names_of = [names(str(i)) for i in labeller_ids]
    return sql, [labeller_ids, names_of, project.pk, *chosen.params]


def _columns(
    project: Project, chosen: Selection
) -> tuple[dict[str, str], str, tuple[list[Any], list[Any]]]:
    """Each field's SQL (a JSON text, or NULL), the FROM clause, and the parameters of the
    probabilities column and of the FROM clause."""
    ids = list(project.labellers.values_list("id", flat=True))
    labellers, labeller_params = _labellers(project, ids, chosen)
    body, body_params = from_sql(chosen, labellers, labeller_params)
    probabilities, probability_params = _probabilities(list(project.labels))
    columns = {
        "external_id": "to_json(i.external_id)::text",
        "payload": "i.payload::text",
        "label": f"to_json({final_label_sql()})::text",
        "label_source": f"to_json({label_source_sql()})::text",
        "confidence": "c.confidence::text",
        "n_labels": "COALESCE(c.n_labels, 0)::text",
        "agreement": "c.agreement::text",
        "labellers": "COALESCE(l.labellers, '[]')",
        "model_version": "to_json(p.model_version)::text",
        "probabilities": probabilities,
        "queued_reason": "to_json(q.rule)::text",
        "source": "to_json(i.source)::text",
        "split": "to_json(i.split)::text",
        "item_created_at": f"'\"' || {_ts('i.created_at')} || '\"'",
        "approved_at": f"'\"' || {_ts(approved_at_sql())} || '\"'",
    }
    return columns, body, (probability_params, body_params)


def _jsonl(project: Project, chosen: Selection) -> tuple[str, list[Any], str]:
    columns, body, params = _columns(project, chosen)
    pieces = [
        f"'{'{' if n == 0 else ','}\"{name}\":' || COALESCE({columns[name]}, 'null')"
        for n, name in enumerate(FIELDS)
    ]
    line = " || ".join(pieces) + " || '}'"
    return (
        f"SELECT {line} {body} ORDER BY {bytewise('i.external_id')}",
        [*params[0], *params[1]],
        VERBATIM,
    )


def _csv(project: Project, chosen: Selection) -> tuple[str, list[Any], str]:
    columns, body, params = _columns(project, chosen)
    # Plain values in CSV cells (text unquoted), JSON only in the object and list cells.
    plain = {
        "external_id": "i.external_id",
        "label": final_label_sql(),
        "label_source": label_source_sql(),
        "model_version": "p.model_version",
        "queued_reason": "q.rule",
        "source": "i.source",
        "split": "i.split",
        "item_created_at": _ts("i.created_at"),
        "approved_at": _ts(approved_at_sql()),
    }
    cells = [f'{plain.get(name, columns[name])} AS "{name}"' for name in FIELDS]
    sql = f"SELECT {', '.join(cells)} {body} ORDER BY {bytewise('i.external_id')}"
    return sql, [*params[0], *params[1]], "FORMAT csv, HEADER true"


def _manifest(project: Project, chosen: Selection) -> tuple[str, list[Any], str]:
    columns, body, params = _columns(project, chosen)
    slug = project.slug  # a slug is [a-z0-9_-]: safe inside the SQL string
    metadata = (
        "'{\"class-name\":' || " + columns["label"]
        + " || ',\"confidence\":' || COALESCE(c.confidence::text, 'null')"
        + " || ',\"creation-date\":' || COALESCE(" + columns["approved_at"] + ", 'null')"
        + f" || ',\"human-annotated\":\"yes\",\"job-name\":\"labeling-job/{slug}\"'"
        + " || ',\"type\":\"groundtruth/text-classification\"'"
        + " || ',\"label-source\":' || " + columns["label_source"]
        + " || ',\"labellers\":' || " + columns["labellers"] + " || '}'"
    )  # fmt: skip
    index = f"COALESCE((array_position(%s::text[], {final_label_sql()}) - 1)::text, 'null')"
    line = (
        "'{\"source\":' || i.payload::text || ',\"external-id\":' || "
        + columns["external_id"]
        + f" || ',\"{slug}\":' || {index} || ',\"{slug}-metadata\":' || {metadata} || '}}'"
    )
    # No probabilities in these lines: only the class index's parameter precedes the FROM's.
    return (
        f"SELECT {line} {body} ORDER BY {bytewise('i.external_id')}",
        [list(project.labels), *params[1]],
        VERBATIM,
    )


BUILDERS: dict[str, Callable[[Project, Selection], tuple[str, list[Any], str]]] = {
    "jsonl": _jsonl,
    "csv": _csv,
    "manifest": _manifest,
}


def middle(chosen: Selection, below: int) -> str | None:
    """The external id with `below` selected items before it in the release's order."""
    sql = (
        f"SELECT i.external_id FROM {ITEM} i WHERE {chosen.where} "
        f"ORDER BY {bytewise('i.external_id')} OFFSET %s LIMIT 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*chosen.params, below])
        row = cursor.fetchone()
    return str(row[0]) if row else None


def _range(chosen: Selection, operator: str, external_id: str) -> Selection:
    where = f"{chosen.where} AND {bytewise('i.external_id')} {operator} %s"
    return Selection(where, [*chosen.params, external_id])


def _copy(cursor: Any, statement: tuple[str, list[Any], str], header: bool) -> Generator[bytes]:
    sql, params, options = statement
    if not header:
        options = options.replace(", HEADER true", "")
    with cursor.copy(f"COPY ({sql}) TO STDOUT WITH ({options})", params) as copy:
        for chunk in copy:
            yield bytes(chunk)


def _spool(
    other: Any, snapshot: str, statement: tuple[str, list[Any], str], spool: IO[bytes]
) -> None:
    """Write one range's COPY into `spool` on the second connection, in the given snapshot."""
    with other.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
        for name, value in RELEASE_SETTINGS:
            cursor.execute(f"SET LOCAL {name} = '{value}'")
        for chunk in _copy(cursor, statement, header=False):
            spool.write(chunk)
    other.rollback()


def _two_ranges(project: Project, chosen: Selection, fmt: str, split_at: int) -> Generator[bytes]:
    """The release written as two ranges at once (see the module's docstring)."""
    first = middle(chosen, split_at)
    if first is None:  # fewer rows than split_at: one COPY
        yield from copy_chunks(project, chosen, fmt)
        return
    low = BUILDERS[fmt](project, _range(chosen, "<", first))
    high = BUILDERS[fmt](project, _range(chosen, ">=", first))
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_export_snapshot()")
        snapshot = str(cursor.fetchone()[0])
    if not SNAPSHOT_ID.fullmatch(snapshot):
        raise RuntimeError(f"unexpected snapshot id {snapshot!r}")
    other = connection.get_new_connection(connection.get_connection_params())
    failures: list[BaseException] = []

    def spool_high() -> None:
        try:
            _spool(other, snapshot, high, spool)
        except BaseException as error:  # re-raised by the writer below
            failures.append(error)

    with tempfile.TemporaryFile() as spool:
        worker = threading.Thread(target=spool_high, name="release-copy", daemon=True)
        worker.start()
        try:
            with connection.cursor() as cursor:
                yield from _copy(cursor.cursor, low, header=True)
            worker.join()
            if failures:
                raise failures[0]
            spool.seek(0)
            while chunk := spool.read(SPOOL_READ):
                yield chunk
        finally:
            if worker.is_alive():
                other.cancel()
                worker.join()
            other.close()


def copy_chunks(
    project: Project, chosen: Selection, fmt: str, split_at: int = 0
) -> Generator[bytes]:
    """The finished data file of a release, in chunks, as PostgreSQL writes it; with `split_at`,
    as two ranges at once, the first of `split_at` rows (only in a REPEATABLE READ transaction
    that has written nothing, whose snapshot a second connection can share)."""
    if split_at:
        yield from _two_ranges(project, chosen, fmt, split_at)
        return
    with connection.cursor() as cursor:
        yield from _copy(cursor.cursor, BUILDERS[fmt](project, chosen), header=True)
