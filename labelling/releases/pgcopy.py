"""On PostgreSQL, release files are written by the database: one COPY … TO STDOUT whose rows are
the finished lines, streamed straight through the sha256 into the file.

Python building each row took about 60 µs; PostgreSQL builds the same line in a few, so a
million-row release is bound by the query, not by the interpreter. The lines hold the same fields
in the same order as the Python writer's (labelling/releases/formats.py, used on SQLite); payload
keys come in jsonb's order (shorter keys first) rather than alphabetically.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import orjson
from django.db import connection

from labelling.models import Project
from labelling.policy import FIELDS as RULE_FIELDS
from labelling.releases.rows import (
    FIELDS,
    LABEL,
    Pseudonyms,
    Selection,
    approved_at_sql,
    bytewise,
    final_label_sql,
    from_sql,
    label_source_sql,
)

# Labeller pseudonyms are looked up in an array indexed by labeller id when the project's ids
# span at most this many slots per labeller (plus MIN_SPAN); else by a join.
MAX_SPAN_PER_LABELLER = 8
MIN_SPAN = 100_000
SIGN_BIT = -(2**63)
LABEL_SOURCES = ("consensus", "expert", "gold")
RULES = tuple(RULE_FIELDS)
HEX_NAME = "lpad(to_hex(ps), 16, '0')"
# Values written into the SQL as they are: no quote, backslash, percent or control character.
PLAIN = re.compile(r"[A-Za-z0-9_.:/ -]{1,100}")
# Lines built whole by the query (JSON Lines, manifests) come in COPY's binary format: each row's
# one text field byte for byte, with no escaping for the server to scan every byte for.
BINARY = "FORMAT binary"
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = len(SIGNATURE) + 8  # then a flags word and the length of a header extension
ROW = struct.Struct(">hi")  # a row's field count and its (first) field's length
TRAILER = b"\xff\xff"


def _ts(column: str) -> str:
    return f"to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"


def _json_text(expr: str) -> str:
    return f"COALESCE(to_json({expr})::text, 'null')"


def _json_string(expr: str, known: Iterable[str]) -> str:
    """A text as a JSON string, with the values expected of it written in as constants.

    to_json looks up how to write its argument's type on every call (about 0.5 µs, most of
    building a line). The simple CASE reads `expr` once; only plain values (nothing to escape in
    JSON or in SQL) are written in, anything else still goes through to_json.
    """
    plain = sorted({value for value in known if PLAIN.fullmatch(value)})
    whens = " ".join(f"WHEN '{value}' THEN '\"{value}\"'" for value in plain)
    if not whens:
        return f"to_json({expr})::text"
    return f"CASE {expr} {whens} ELSE to_json({expr})::text END"


def _probabilities(labels: list[str]) -> tuple[str, list[Any]]:
    """A JSON object {label: p} from the stored list, keys in the project's label order."""
    parts, params = [], []
    for index, label in enumerate(labels):
        key = ("{" if index == 0 else ",") + orjson.dumps(label).decode() + ":"
        parts.append(f"%s || (p.probabilities ->> {index})")
        params.append(key)
    body = " || ".join(parts) + " || '}'"
    return f"CASE WHEN p.probabilities IS NULL THEN NULL ELSE {body} END", params


def _json_list(name: str) -> str:
    """The start of a JSON list of pseudonyms (hex digits: nothing to escape) as json_agg's text
    writes it, ending in the aggregate's open ORDER BY; string_agg skips json_agg's per-value
    type dispatch. Close it with ") [FILTER (…)] || ']'"."""
    return f"'[' || string_agg('\"' || {name} || '\"', ', '"


def _labellers(project: Project, labeller_ids: list[int]) -> tuple[str, list[Any]]:
    """Per item, the JSON list of its valid labels' pseudonymous labeller ids, sorted."""
    if not labeller_ids:
        return _joined_labellers(project, labeller_ids)
    low, high = min(labeller_ids), max(labeller_ids)
    if high - low >= MAX_SPAN_PER_LABELLER * len(labeller_ids) + MIN_SPAN:
        return _joined_labellers(project, labeller_ids)
    # A pseudonym is 16 hex digits: 64 bits, kept as a signed bigint and looked up by labeller
    # id in an array (fixed-width elements: a constant-time subscript, no join), written back as
    # 16 hex digits by to_hex, ordered as text by flipping the sign bit. 0 marks a gap (a
    # labeller of another project), left out of the list as the join leaves it out (a pseudonym
    # of sixteen zeros, one chance in 2**64, would be left out too).
    names = Pseudonyms(project)
    numbers = [0] * (high - low + 1)
    for labeller_id in labeller_ids:
        numbers[labeller_id - low] = int.from_bytes(
            bytes.fromhex(names(str(labeller_id))), "big", signed=True
        )
    sql = (
        f"SELECT item_id, {_json_list(HEX_NAME)} ORDER BY ps # %s) "
        "FILTER (WHERE ps <> 0) || ']' AS labellers, "
        "MAX(created_at) FILTER (WHERE ps <> 0) AS last_label_at FROM ("
        "SELECT lb.item_id, lb.created_at, (%s::bigint[])[lb.labeller_id - %s] AS ps "
        f"FROM {LABEL} lb WHERE lb.project_id = %s AND lb.state = 'valid') lb GROUP BY item_id"
    )
    return sql, [SIGN_BIT, numbers, low - 1, project.pk]


def _joined_labellers(project: Project, labeller_ids: list[int]) -> tuple[str, list[Any]]:
    """The same lists by joining the labels with (labeller id, pseudonym) pairs."""
    names = Pseudonyms(project)
    sql = (
        f'SELECT lb.item_id, {_json_list("ps.name")} ORDER BY ps.name COLLATE "C") '
        "|| ']' AS labellers, "
        f"MAX(lb.created_at) AS last_label_at FROM {LABEL} lb "
        "JOIN unnest(%s::bigint[], %s::text[]) AS ps(id, name) ON ps.id = lb.labeller_id "
        "WHERE lb.project_id = %s AND lb.state = 'valid' GROUP BY lb.item_id"
    )
    return sql, [labeller_ids, [names(str(i)) for i in labeller_ids], project.pk]


def _payload(omit: Sequence[str]) -> tuple[str, list[Any]]:
    """The payload as JSON text, without the fields left out of the release (personal ones)."""
    if not omit:
        return "i.payload::text", []
    return "(i.payload - %s::text[])::text", [list(omit)]


def _columns(
    project: Project, chosen: Selection, omit: Sequence[str]
) -> tuple[dict[str, str], str, tuple[list[Any], list[Any], list[Any]]]:
    """Each field's SQL (a JSON text, or NULL), the FROM clause, and the parameters of the
    payload column, of the probabilities column and of the FROM clause."""
    payload, payload_params = _payload(omit)
    ids = list(project.labellers.values_list("id", flat=True))
    labellers, labeller_params = _labellers(project, ids)
    body, body_params = from_sql(chosen, labellers, labeller_params)
    probabilities, probability_params = _probabilities(list(project.labels))
    columns = {
        "external_id": "to_json(i.external_id)::text",
        "payload": payload,
        "label": _json_string(final_label_sql(), project.labels),
        "label_source": _json_string(label_source_sql(), LABEL_SOURCES),
        "confidence": "c.confidence::text",
        "n_labels": "COALESCE(c.n_labels, 0)::text",
        "agreement": "c.agreement::text",
        "labellers": "COALESCE(l.labellers, '[]')",
        "model_version": "to_json(p.model_version)::text",
        "probabilities": probabilities,
        "queued_reason": _json_string("q.rule", RULES),
        "source": "to_json(i.source)::text",
        "split": "to_json(i.split)::text",
        "item_created_at": f"'\"' || {_ts('i.created_at')} || '\"'",
        "approved_at": f"'\"' || {_ts(approved_at_sql())} || '\"'",
    }
    return columns, body, (payload_params, probability_params, body_params)


def _jsonl(project: Project, chosen: Selection, omit: Sequence[str]) -> tuple[str, list[Any], str]:
    columns, body, params = _columns(project, chosen, omit)
    pieces = [
        f"'{'{' if n == 0 else ','}\"{name}\":' || COALESCE({columns[name]}, 'null')"
        for n, name in enumerate(FIELDS)
    ]
    line = " || ".join(pieces) + " || E'}\\n'"
    return (
        f"SELECT {line} {body} ORDER BY {bytewise('i.external_id')}",
        [*params[0], *params[1], *params[2]],
        BINARY,
    )


def _csv(project: Project, chosen: Selection, omit: Sequence[str]) -> tuple[str, list[Any], str]:
    columns, body, params = _columns(project, chosen, omit)
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
    # Parameters in the order their columns come: payload (field 2), probabilities (field 10).
    return sql, [*params[0], *params[1], *params[2]], "FORMAT csv, HEADER true"


def _manifest(
    project: Project, chosen: Selection, omit: Sequence[str]
) -> tuple[str, list[Any], str]:
    columns, body, params = _columns(project, chosen, omit)
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
        "'{\"source\":' || "
        + columns["payload"]
        + " || ',\"external-id\":' || "
        + columns["external_id"]
        + f" || ',\"{slug}\":' || {index} || ',\"{slug}-metadata\":' || {metadata} || E'}}\\n'"
    )
    # No probabilities in these lines: the payload's and the class index's parameters precede
    # the FROM's.
    return (
        f"SELECT {line} {body} ORDER BY {bytewise('i.external_id')}",
        [*params[0], list(project.labels), *params[2]],
        BINARY,
    )


BUILDERS: dict[str, Callable[[Project, Selection, Sequence[str]], tuple[str, list[Any], str]]] = {
    "jsonl": _jsonl,
    "csv": _csv,
    "manifest": _manifest,
}


class CopyFormatError(RuntimeError):
    """A binary COPY's data were not what this module asked for."""


def _fields(messages: Iterable[memoryview]) -> Generator[bytes]:
    """The one text field of each row of a binary COPY, as bytes.

    libpq hands COPY data over a row a message (PostgreSQL sends the file's header with the first
    row). A row is its field count (1), its field's length and its bytes; the trailer a count of
    -1. Anything else is an error, not a guess.
    """
    header = True
    for message in messages:
        if header:
            if message[: len(SIGNATURE)] != SIGNATURE:
                raise CopyFormatError("a binary COPY without its signature")
            extension = int.from_bytes(message[HEADER - 4 : HEADER], "big")
            message, header = message[HEADER + extension :], False
            if not message:
                continue
        if len(message) >= ROW.size:
            count, length = ROW.unpack_from(message)
            if count == 1 and length == len(message) - ROW.size:
                yield bytes(message[ROW.size :])
                continue
        if message != TRAILER:
            raise CopyFormatError("a binary COPY row that is not one text field")


def copy_chunks(
    project: Project, chosen: Selection, fmt: str, omit: Sequence[str] = ()
) -> Generator[bytes]:
    """The finished data file of a release, in chunks, as PostgreSQL writes it; payload fields
    named in `omit` are left out."""
    sql, params, options = BUILDERS[fmt](project, chosen, omit)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: Django's wrapper has no copy()
        with raw.copy(f"COPY ({sql}) TO STDOUT WITH ({options})", params) as copy:
            if options == BINARY:
                yield from _fields(copy)
            else:
                for chunk in copy:
                    yield bytes(chunk)
