"""On PostgreSQL, release files are written by the database: one COPY … TO STDOUT whose rows are
the finished lines, streamed straight through the sha256 into the file.

Python building each row took about 60 µs; PostgreSQL builds the same line in a few, so a
million-row release is bound by the query, not by the interpreter. The lines hold the same fields
in the same order as the Python writer's (labelling/releases/formats.py, used on SQLite); payload
keys come in jsonb's order (shorter keys first) rather than alphabetically.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any

import orjson
from django.db import connection

from labelling.models import Project
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
# COPY's csv format with a delimiter and a quote that JSON text never holds raw (control
# characters are always escaped in JSON): each line comes out byte for byte as built.
VERBATIM = "FORMAT csv, DELIMITER E'\\x01', QUOTE E'\\x02'"


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
        "SELECT item_id, json_agg(lpad(to_hex(ps), 16, '0') ORDER BY ps # %s) "
        "FILTER (WHERE ps <> 0)::text AS labellers, "
        "MAX(created_at) FILTER (WHERE ps <> 0) AS last_label_at FROM ("
        "SELECT lb.item_id, lb.created_at, (%s::bigint[])[lb.labeller_id - %s] AS ps "
        f"FROM {LABEL} lb WHERE lb.project_id = %s AND lb.state = 'valid') lb GROUP BY item_id"
    )
    return sql, [SIGN_BIT, numbers, low - 1, project.pk]


def _joined_labellers(project: Project, labeller_ids: list[int]) -> tuple[str, list[Any]]:
    """The same lists by joining the labels with (labeller id, pseudonym) pairs."""
    names = Pseudonyms(project)
    sql = (
        'SELECT lb.item_id, json_agg(ps.name ORDER BY ps.name COLLATE "C")::text AS labellers, '
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
    return columns, body, (payload_params, probability_params, body_params)


def _jsonl(project: Project, chosen: Selection, omit: Sequence[str]) -> tuple[str, list[Any], str]:
    columns, body, params = _columns(project, chosen, omit)
    pieces = [
        f"'{'{' if n == 0 else ','}\"{name}\":' || COALESCE({columns[name]}, 'null')"
        for n, name in enumerate(FIELDS)
    ]
    line = " || ".join(pieces) + " || '}'"
    return (
        f"SELECT {line} {body} ORDER BY {bytewise('i.external_id')}",
        [*params[0], *params[1], *params[2]],
        VERBATIM,
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
        + f" || ',\"{slug}\":' || {index} || ',\"{slug}-metadata\":' || {metadata} || '}}'"
    )
    # No probabilities in these lines: the payload's and the class index's parameters precede
    # the FROM's.
    return (
        f"SELECT {line} {body} ORDER BY {bytewise('i.external_id')}",
        [*params[0], list(project.labels), *params[2]],
        VERBATIM,
    )


BUILDERS: dict[str, Callable[[Project, Selection, Sequence[str]], tuple[str, list[Any], str]]] = {
    "jsonl": _jsonl,
    "csv": _csv,
    "manifest": _manifest,
}


def copy_chunks(
    project: Project, chosen: Selection, fmt: str, omit: Sequence[str] = ()
) -> Generator[bytes]:
    """The finished data file of a release, in chunks, as PostgreSQL writes it; payload fields
    named in `omit` are left out."""
    sql, params, options = BUILDERS[fmt](project, chosen, omit)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # psycopg's own cursor: Django's wrapper has no copy()
        with raw.copy(f"COPY ({sql}) TO STDOUT WITH ({options})", params) as copy:
            for chunk in copy:
                yield bytes(chunk)
