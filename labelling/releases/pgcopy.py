"""On PostgreSQL, release files are written by the database: COPY … TO STDOUT whose rows are
the finished lines, streamed straight through the sha256 into the file; a large release in runs
of consecutive external ids, one COPY a connection, all in the release's snapshot (copy_chunks).

Python building each row took about 60 µs; PostgreSQL builds the same line in a few, so a
million-row release is bound by the query, not by the interpreter. The lines hold the same fields
in the same order as the Python writer's (labelling/releases/formats.py, used on SQLite); payload
keys come in jsonb's order (shorter keys first) rather than alphabetically. CSV lines are built
by the query too, each cell quoted as COPY's CSV mode quotes it. The lines come joined in batches
of about BATCH_BYTES, one COPY row a batch: a COPY row costs the client about a microsecond to
take in, whatever its size.

Most lines are not built here at all: labelling/releases/prepared.py writes each decided item's
lines ahead, and a run reads those of its items that have one of the current key (choice()),
building only the others', byte for byte the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import itertools
import logging
import math
import queue
import re
import struct
import threading
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from django.conf import settings
from django.db import connection

from labelling.models import PreparedCsv, PreparedJsonl, PreparedManifest, Project
from labelling.policy import FIELDS as RULE_FIELDS
from labelling.releases.formats import FLUSH_BYTES, FORMATS, QUEUED_BLOCKS
from labelling.releases.rows import (
    FIELDS,
    ITEM,
    LABEL,
    Pseudonyms,
    Selection,
    approved_at_sql,
    between,
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
QUOTED_NAME = 18  # bytes of a pseudonym as a JSON string: 16 hex digits in quotes
# Values written into the SQL as they are: no quote, backslash, percent or control character.
PLAIN = re.compile(r"[A-Za-z0-9_.:/ -]{1,100}")
# The lines come in COPY's binary format: each row's one text field byte for byte, with no
# escaping for the server to scan every byte for.
BINARY = "FORMAT binary"
SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
HEADER = len(SIGNATURE) + 8  # then a flags word and the length of a header extension
ROW = struct.Struct(">hi")  # a row's field count and its (first) field's length
TRAILER = b"\xff\xff"
RELEASE_WORK_MEM = "128MB"
# What pg_export_snapshot() returns: written into SET TRANSACTION SNAPSHOT (no parameters there).
SNAPSHOT_ID = re.compile(r"[0-9A-F]+-[0-9A-F]+-[0-9]+")
# A release is cut into runs of at least this many rows (see runs()), sampled from about
# SAMPLE_ROWS of its items.
MIN_ROWS_PER_RUN = 50_000
SAMPLE_ROWS = 20_000
CANCEL_SECONDS = 10
# A release written in runs takes a core a run: the runs' plans get no parallel workers of their
# own (which would each aggregate the run's labels again, and crowd the other runs out).
SERIAL_PLANS = "SET LOCAL max_parallel_workers_per_gather = 0"
# Lines are joined into COPY rows of about this many bytes (see batch_cuts()), each line
# counted as its stored payload's size plus LINE_BYTES (the other fields); a stored payload may
# be compressed, so a batch of large payloads can be a few times larger.
BATCH_BYTES = 1024 * 1024
LINE_BYTES = 400
# Quoted in a CSV cell, as COPY's CSV mode quotes: a comma, a quote, a line break.
CSV_SPECIAL = "E'[,\"\\r\\n]'"
# A COPY statement and its parameters.
Statement = tuple[str, list[Any]]
# A release's line as SQL (text ending in a newline), the FROM … WHERE it reads, and the
# parameters of both, in order.
Lines = tuple[str, str, list[Any]]
# The tables of prepared lines (labelling/releases/prepared.py), by format.
PREPARED = {
    "jsonl": PreparedJsonl._meta.db_table,
    "csv": PreparedCsv._meta.db_table,
    "manifest": PreparedManifest._meta.db_table,
}
logger = logging.getLogger("quorum.releases")


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
    return _constants(expr, known, lambda value: f'"{value}"', f"to_json({expr})::text")


def _constants(
    expr: str, known: Iterable[str], written: Callable[[str], str], otherwise: str
) -> str:
    """`expr` written as `written` writes each plain value expected of it (nothing to escape in
    SQL or in what it is written as), as constants in a simple CASE that reads `expr` once;
    anything else as `otherwise`."""
    plain = sorted({value for value in known if PLAIN.fullmatch(value)})
    if not plain:
        return otherwise
    whens = " ".join(f"WHEN '{value}' THEN '{written(value)}'" for value in plain)
    return f"CASE {expr} {whens} ELSE {otherwise} END"


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


def _of_chosen(chosen: Selection) -> tuple[str, list[Any]]:
    """The condition that keeps the labels of the selected items only: a release written in runs
    (see runs()) aggregates each run's own labels, not every run all of the project's."""
    return f"lb.item_id IN (SELECT i.id FROM {ITEM} i WHERE {chosen.where})", list(chosen.params)


def _labellers(
    project: Project, labeller_ids: list[int], chosen: Selection
) -> tuple[str, list[Any]]:
    """Per selected item, the JSON list of its valid labels' pseudonymous labeller ids, sorted."""
    if not labeller_ids:
        return _joined_labellers(project, labeller_ids, chosen)
    low, high = min(labeller_ids), max(labeller_ids)
    if high - low >= MAX_SPAN_PER_LABELLER * len(labeller_ids) + MIN_SPAN:
        return _joined_labellers(project, labeller_ids, chosen)
    # A pseudonym is 16 hex digits: 64 bits, kept as a signed bigint and looked up by labeller
    # id in an array (fixed-width elements: a constant-time subscript, no join), ordered as
    # text by flipping the sign bit. Its JSON string ("…", 18 bytes) is cut from one bytea of
    # them all at (id - low) * 18 (a constant-time substring of bytes, where formatting the
    # number took most of the list's cost), and the list made text once an item. 0 marks a gap
    # (a labeller of another project), left out of the list as the join leaves it out (a
    # pseudonym of sixteen zeros, one chance in 2**64, would be left out too).
    names = Pseudonyms(project)
    numbers = [0] * (high - low + 1)
    strings = [bytes(QUOTED_NAME)] * (high - low + 1)
    for labeller_id in labeller_ids:
        name = names(str(labeller_id))
        numbers[labeller_id - low] = int.from_bytes(bytes.fromhex(name), "big", signed=True)
        strings[labeller_id - low] = f'"{name}"'.encode()
    of_chosen, chosen_params = _of_chosen(chosen)
    sql = (
        "SELECT item_id, convert_from('\\x5b'::bytea || string_agg(name, '\\x2c20'::bytea "
        "ORDER BY ps # %s) FILTER (WHERE ps <> 0) || '\\x5d'::bytea, 'UTF8') AS labellers, "
        "MAX(created_at) FILTER (WHERE ps <> 0) AS last_label_at FROM ("
        "SELECT lb.item_id, lb.created_at, (%s::bigint[])[lb.labeller_id - %s] AS ps, "
        f"substring(%s::bytea FROM ((lb.labeller_id - %s) * {QUOTED_NAME} + 1)::int "
        f"FOR {QUOTED_NAME}) AS name "
        f"FROM {LABEL} lb WHERE lb.project_id = %s AND lb.state = 'valid' AND {of_chosen}) lb "
        "GROUP BY item_id"
    )
    params = [SIGN_BIT, numbers, low - 1, b"".join(strings), low, project.pk, *chosen_params]
    return sql, params


def _joined_labellers(
    project: Project, labeller_ids: list[int], chosen: Selection
) -> tuple[str, list[Any]]:
    """The same lists by joining the labels with (labeller id, pseudonym) pairs."""
    names = Pseudonyms(project)
    of_chosen, chosen_params = _of_chosen(chosen)
    sql = (
        f'SELECT lb.item_id, {_json_list("ps.name")} ORDER BY ps.name COLLATE "C") '
        "|| ']' AS labellers, "
        f"MAX(lb.created_at) AS last_label_at FROM {LABEL} lb "
        "JOIN unnest(%s::bigint[], %s::text[]) AS ps(id, name) ON ps.id = lb.labeller_id "
        f"WHERE lb.project_id = %s AND lb.state = 'valid' AND {of_chosen} GROUP BY lb.item_id"
    )
    return sql, [labeller_ids, [names(str(i)) for i in labeller_ids], project.pk, *chosen_params]


def _payload(omit: Sequence[str]) -> tuple[str, list[Any]]:
    """The payload as JSON text, without the fields left out of the release (personal ones)."""
    if not omit:
        return "i.payload::text", []
    return "(i.payload - %s::text[])::text", [list(omit)]


def _columns(
    project: Project, chosen: Selection
) -> tuple[dict[str, str], str, tuple[list[Any], list[Any]]]:
    """Each field's SQL after the external id and the payload (a JSON text, or NULL), the FROM
    clause, and the parameters of the probabilities column and of the FROM clause."""
    ids = list(project.labellers.values_list("id", flat=True))
    labellers, labeller_params = _labellers(project, ids, chosen)
    body, body_params = from_sql(chosen, labellers, labeller_params)
    probabilities, probability_params = _probabilities(list(project.labels))
    columns = {
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
    return columns, body, (probability_params, body_params)


# A line's SQL text, and its parameters in order.
Piece = tuple[str, list[Any]]
EXTERNAL_ID = "to_json(i.external_id)::text"


def line_heads(omit: Sequence[str]) -> dict[str, Piece]:
    """Each format's line up to the external id and the payload (the head), read from the item
    alone, without the payload fields in `omit`; line_tails() writes the rest."""
    payload, payload_params = _payload(omit)
    csv_payload, csv_params = _csv_payload(omit)
    return {
        "jsonl": (
            f"'{{\"external_id\":' || COALESCE({EXTERNAL_ID}, 'null') "
            f"|| ',\"payload\":' || COALESCE({payload}, 'null')",
            payload_params,
        ),
        "csv": (
            f"COALESCE({_csv_text('i.external_id')}, '') || ',' || COALESCE({csv_payload}, '')",
            csv_params,
        ),
        "manifest": (
            f"'{{\"source\":' || {payload} || ',\"external-id\":' || {EXTERNAL_ID}",
            payload_params,
        ),
    }


def line_tails(project: Project, chosen: Selection) -> tuple[dict[str, Piece], str, list[Any]]:
    """Each format's line after the payload, to its newline; the FROM clause they read, and its
    parameters."""
    columns, body, (probability_params, body_params) = _columns(project, chosen)
    tails = {
        "jsonl": _jsonl(columns, probability_params),
        "csv": _csv(project, columns, probability_params),
        "manifest": _manifest(project, columns),
    }
    return tails, body, body_params


def _jsonl(columns: dict[str, str], probability_params: list[Any]) -> Piece:
    pieces = [f"',\"{name}\":' || COALESCE({columns[name]}, 'null')" for name in FIELDS[2:]]
    return " || ".join(pieces) + " || E'}\\n'", probability_params


def _quoted(expr: str) -> str:
    """A text in a CSV cell's quotes, a quote inside doubled."""
    return f"'\"' || replace({expr}, '\"', '\"\"') || '\"'"


def _csv_text(expr: str, known: Iterable[str] = ()) -> str:
    """A text as COPY's CSV mode writes it in a cell: quoted (_quoted) when empty or holding a
    comma, a quote or a line break, else as it is; NULL stays NULL (an empty cell). Plain values
    expected of it (see _json_string) are written in as constants. `expr` is written several
    times: it must take no parameters."""
    quoted = f"CASE WHEN {expr} = '' OR {expr} ~ {CSV_SPECIAL} THEN {_quoted(expr)} ELSE {expr} END"
    return _constants(expr, known, lambda value: value, quoted)


def _csv_payload(omit: Sequence[str]) -> tuple[str, list[Any]]:
    """The payload's JSON in a CSV cell: quoted unless it is {} (any other object has a quoted
    key), as COPY's CSV mode quotes it."""
    value, params = ("(i.payload - %s::text[])", [list(omit)] * 2) if omit else ("i.payload", [])
    return f"CASE WHEN {value} = '{{}}' THEN '{{}}' ELSE {_quoted(f'{value}::text')} END", params


def _csv(project: Project, columns: dict[str, str], probability_params: list[Any]) -> Piece:
    # Plain values in CSV cells, JSON only in the object and list cells, each quoted as COPY's
    # CSV mode quotes it (the bytes it gave before these lines were built here).
    cells = {
        "label": _csv_text(final_label_sql(), project.labels),
        "label_source": _csv_text(label_source_sql(), LABEL_SOURCES),
        "labellers": _csv_text(columns["labellers"]),
        "model_version": _csv_text("p.model_version"),
        # Not NULL: an object with a key a label (a project has labels), so always quoted.
        "probabilities": _quoted(columns["probabilities"]),
        "queued_reason": _csv_text("q.rule", RULES),
        "source": _csv_text("i.source"),
        "split": _csv_text("i.split"),
        "item_created_at": _ts("i.created_at"),
        "approved_at": _ts(approved_at_sql()),
    }
    for name in ("confidence", "n_labels", "agreement"):  # numbers: nothing to quote
        cells[name] = columns[name]
    cells_sql = [f"COALESCE({cells[name]}, '')" for name in FIELDS[2:]]
    # Only the probabilities cell takes parameters.
    return "',' || " + " || ',' || ".join(cells_sql) + " || E'\\n'", probability_params


def _manifest(project: Project, columns: dict[str, str]) -> Piece:
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
    # No probabilities in these lines: the class index's labels are the one parameter.
    tail = f"',\"{slug}\":' || {index} || ',\"{slug}-metadata\":' || {metadata} || E'}}\\n'"
    return tail, [list(project.labels)]


def built_lines(project: Project, chosen: Selection, fmt: str, omit: Sequence[str]) -> Lines:
    """The selected items' lines in `fmt`, built from the rows they are read from."""
    head, head_params = line_heads(omit)[fmt]
    tails, body, body_params = line_tails(project, chosen)
    tail, tail_params = tails[fmt]
    return f"{head} || {tail}", body, [*head_params, *tail_params, *body_params]


def prepared_lines(chosen: Selection, fmt: str, key: str) -> Lines:
    """The selected items' lines in `fmt` that were prepared (with this `key`)."""
    body = (
        f"FROM {ITEM} i JOIN {PREPARED[fmt]} r ON r.item_id = i.id AND r.key = %s "
        f"WHERE {chosen.where}"
    )
    return "r.line", body, [key, *chosen.params]


def unprepared(chosen: Selection, key: str, fmt: str) -> Selection:
    """The selected items without a line in `fmt` prepared with this `key`."""
    missing = f"NOT EXISTS (SELECT 1 FROM {PREPARED[fmt]} r WHERE r.item_id = i.id AND r.key = %s)"
    return Selection(f"{chosen.where} AND {missing}", [*chosen.params, key])


def prepared_omit(project: Project) -> list[str]:
    """The payload fields prepared lines leave out: the project's personal ones, as a release
    does unless asked to keep them."""
    return list(project.personal_fields or [])


def lines_key(project: Project) -> str:
    """What a prepared line must have been written for to be taken: a digest of the SQL that
    builds the lines (the code), of the project's slug, labels and personal fields, and of
    SECRET_KEY (the labellers' pseudonyms)."""
    omit = prepared_omit(project)
    tails, body, _ = line_tails(project, Selection("i.project_id = %s", [project.pk]))
    heads = line_heads(omit)
    text = "\n".join([body, *(heads[fmt][0] + tails[fmt][0] for fmt in FORMATS)])
    message = f"quorum-lines:{project.pk}:{project.slug}:{list(project.labels)}:{omit}:{text}"
    digest = hmac.new(settings.SECRET_KEY.encode(), message.encode(), hashlib.sha256)
    return digest.hexdigest()[:32]


def csv_header() -> bytes:
    """A CSV release's first line: the field names (plain: nothing to quote)."""
    return (",".join(FIELDS) + "\n").encode()


def _bucket(expr: str, cuts: Sequence[str]) -> tuple[str, list[Any]]:
    """How many of the sorted `cuts` are at or below `expr` (a line's batch number), as a
    binary tree of comparisons: about log2(len(cuts)) of them a row. PostgreSQL's width_bucket
    walks a text array from its start for each probe: 2 µs a row with 500 cuts, a second of a
    run's time."""
    params: list[Any] = []

    def tree(low: int, high: int) -> str:
        if low == high:
            return str(low)
        middle = (low + high) // 2
        params.append(cuts[middle])
        below = tree(low, middle)
        return f"CASE WHEN {expr} < %s THEN {below} ELSE {tree(middle + 1, high)} END"

    return tree(0, len(cuts)), params


def _batched(parts: Sequence[Lines], cuts: list[str]) -> Statement:
    """The COPY of the lines (of every part) in external-id order, joined into one row a batch.

    A batch is the lines from one cut (see batch_cuts()) to the next: its number is how many
    cuts the line's external id is at or past (_bucket), so the rows are sorted once, by batch
    and external id, and each batch is joined in external-id order by the aggregate's own ORDER
    BY (no reliance on the order rows happen to arrive in).
    """
    key = bytewise("i.external_id")
    selects = " UNION ALL ".join(
        f"SELECT {line} AS line, {key} AS k {body}" for line, body, _ in parts
    )
    # The cuts compared byte by byte, as the sort compares the external ids.
    bucket, bucket_params = _bucket('k COLLATE "C"', cuts)
    sql = (
        "SELECT string_agg(line, '' ORDER BY k) FROM ("
        f"SELECT line, k, {bucket} AS b FROM ("
        f"{selects}) s0 ORDER BY b, k) s GROUP BY b ORDER BY b"
    )
    return f"COPY ({sql}) TO STDOUT WITH ({BINARY})", [
        *bucket_params,
        *(p for *_, params in parts for p in params),
    ]


class CopyFormatError(RuntimeError):
    """A binary COPY's data were not what this module asked for."""


def _fields(messages: Iterable[bytes | bytearray | memoryview]) -> Generator[bytes]:
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


def release_settings(cursor: Any) -> None:
    """Settings of a transaction that writes or checks a release: the release query sorts and
    hashes a million wide rows, which with the default 4 MB spill to disk in batches; no JIT (it
    compiles for longer than it saves here)."""
    cursor.execute(f"SET LOCAL work_mem = '{RELEASE_WORK_MEM}'")
    cursor.execute("SET LOCAL jit = off")


def export_snapshot() -> str:
    """The id of this connection's transaction's snapshot, for other connections to share."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_export_snapshot()")
        return str(cursor.fetchone()[0])


def enter_snapshot(cursor: Any, snapshot: str) -> None:
    """Make the transaction just begun on `cursor`'s connection see what `snapshot` (an id from
    export_snapshot()) saw; the id is checked here, where it is written into the SQL."""
    if not SNAPSHOT_ID.fullmatch(snapshot):
        raise RuntimeError(f"unexpected snapshot id {snapshot!r}")
    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    cursor.execute(f"SET TRANSACTION SNAPSHOT '{snapshot}'")
    release_settings(cursor)


@dataclass(frozen=True)
class Sample:
    """About SAMPLE_ROWS of a selection's items (one in `every`, by a hash of the id), in
    external-id order: their external ids and their stored payloads' sizes."""

    ids: list[str]
    sizes: list[int]
    every: int


def sampled(chosen: Selection, total: int) -> Sample:
    """A sample of the selection of `total` items, from which the runs and batches are cut."""
    every = max(1, total // SAMPLE_ROWS)
    # By a hash of the id, not the id itself: a project's ids may all fall in one residue of
    # `every` (two projects' items created in turn), which would leave the sample empty and the
    # release in one batch.
    sql = (
        f"SELECT {bytewise('i.external_id')}, pg_column_size(i.payload) FROM {ITEM} i "
        f"WHERE {chosen.where} AND mod(hashint8(i.id), %s) = 0 ORDER BY 1"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*chosen.params, every])
        found = cursor.fetchall()
    return Sample([row[0] for row in found], [row[1] for row in found], every)


def runs(chosen: Selection, total: int, connections: int, sample: Sample) -> list[Selection]:
    """The selection cut into runs of consecutive external ids of about equal size, one a
    connection, that written one after another make the whole file.

    At least MIN_ROWS_PER_RUN rows a run (a small release is written whole). The cuts are the
    sample's quantiles (the first external id at or past each fraction of it).
    """
    count = min(connections, total // MIN_ROWS_PER_RUN)
    if count < 2 or not sample.ids:
        return [chosen]
    size = len(sample.ids)
    cuts = sorted({sample.ids[math.ceil(n * size / count) - 1] for n in range(1, count)})
    bounds = [None, *cuts, None]
    return [between(chosen, low, high) for low, high in itertools.pairwise(bounds)]


def batch_cuts(sample: Sample) -> list[str]:
    """The external ids that start a new batch: each batch at most BATCH_BYTES by the sample's
    estimate (a sampled line stands for `every` lines), or one line."""
    cuts, size = [], 0
    for external_id, stored in zip(sample.ids, sample.sizes, strict=True):
        line = (stored + LINE_BYTES) * sample.every
        if size and size + line > BATCH_BYTES:
            cuts.append(external_id)
            size = 0
        size += line
    return cuts


@dataclass(frozen=True)
class Choice:
    """A run's COPY for each answer to which kinds of line its items need (prepared lines of
    the current key, lines to build), and the query that answers it; asked by the connection
    that writes the run, in the release's snapshot, so that the runs ask at once."""

    probe: Statement | None  # SELECT EXISTS (prepared), EXISTS (unprepared); None: build all
    statements: dict[str, Statement]

    def needs(self, cursor: Any) -> tuple[bool, bool]:
        """Whether some of the run's items have prepared lines, and whether some have not."""
        if self.probe is None:
            return False, True
        cursor.execute(*self.probe)
        prepared, unprepared = cursor.fetchone()
        return bool(prepared), bool(unprepared)

    def pick(self, cursor: Any) -> Statement:
        """The COPY the run needs: prepared lines only, built lines only, or both."""
        prepared, unprepared = self.needs(cursor)
        if prepared and not unprepared:
            return self.statements["prepared"]
        return self.statements["both" if prepared else "built"]


def choice(
    project: Project,
    chosen: Selection,
    fmt: str,
    omit: Sequence[str],
    cuts: list[str],
    key: str | None = None,
) -> Choice:
    """The COPYs a run of the selected items may need; prepared lines serve only a release that
    leaves out what they leave out (the project's personal fields)."""
    if list(omit) != prepared_omit(project):
        return Choice(None, {"built": _statement(project, chosen, fmt, omit, cuts)})
    key = key or lines_key(project)
    some = f"SELECT 1 FROM {ITEM} i JOIN {PREPARED[fmt]} r ON r.item_id = i.id AND r.key = %s"
    missing = unprepared(chosen, key, fmt)
    probe = (
        f"SELECT EXISTS ({some} WHERE {chosen.where}), "
        f"EXISTS (SELECT 1 FROM {ITEM} i WHERE {missing.where})",
        [key, *chosen.params, *missing.params],
    )
    warm = prepared_lines(chosen, fmt, key)
    cold = built_lines(project, missing, fmt, omit)
    statements = {
        "prepared": _batched([warm], cuts),
        "built": _batched([cold], cuts),
        "both": _batched([warm, cold], cuts),
    }
    return Choice(probe, statements)


def _statement(
    project: Project, chosen: Selection, fmt: str, omit: Sequence[str], cuts: list[str]
) -> Statement:
    """The COPY of the selected items' lines, every line built here."""
    return _batched([built_lines(project, chosen, fmt, omit)], cuts)


class _Stopped(Exception):
    """The reader of a later run stopped reading."""


class LaterRun:
    """A later run of a release: written by a connection of its own in the release's snapshot,
    read on a thread of its own into at most QUEUED_BLOCKS blocks.

    PostgreSQL sends a COPY's first message only once the rows are built and sorted: the thread
    waits for it, not the reader of the earlier runs. Once the queue is full, the thread stops
    reading and the backend waits with its rows sorted. close() stops the thread, cancelling
    the run's statement if it still runs.
    """

    def __init__(self, side: psycopg.Connection[Any], snapshot: str, run: Choice) -> None:
        self._blocks: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUED_BLOCKS)
        self._stop = threading.Event()
        self._side = side
        self._thread = threading.Thread(
            target=self._read, args=(snapshot, run), name="release-run", daemon=True
        )
        self._thread.start()

    def blocks(self) -> Generator[bytes]:
        """The run's bytes, in blocks; an error of its connection is raised here."""
        while True:
            try:
                block = self._blocks.get(timeout=1)
            except queue.Empty:
                if self._thread.is_alive():
                    continue
                raise RuntimeError("a release run's reader ended without its last block") from None
            if isinstance(block, BaseException):
                raise block
            if block is None:
                return
            yield block

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            with contextlib.suppress(psycopg.Error):  # finished meanwhile: nothing to cancel
                self._side.cancel_safe(timeout=CANCEL_SECONDS)
        self._thread.join()

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._blocks.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _read(self, snapshot: str, run: Choice) -> None:
        side = self._side
        try:
            with side:
                with side.cursor() as cursor:
                    cursor.execute("BEGIN")
                    enter_snapshot(cursor, snapshot)
                    cursor.execute(SERIAL_PLANS)
                    sql, values = run.pick(cursor)
                if self._stop.is_set():  # closed before its COPY began
                    return
                with side.cursor() as cursor, cursor.copy(sql, values) as copy:
                    block: list[bytes] = []
                    size = 0
                    for row in _fields(copy):
                        block.append(row)
                        size += len(row)
                        if size >= FLUSH_BYTES:
                            self._put(b"".join(block))
                            block, size = [], 0
                self._put(b"".join(block))
            self._put(None)
        except _Stopped:
            pass
        except BaseException as error:  # raised again in the reader's thread
            with contextlib.suppress(_Stopped):
                self._put(error)


def copy_chunks(
    project: Project,
    chosen: Selection,
    fmt: str,
    omit: Sequence[str] = (),
    *,
    snapshot: str | None = None,
    total: int = 0,
) -> Generator[bytes]:
    """The finished data file of a release, in chunks, as PostgreSQL writes it; payload fields
    named in `omit` are left out.

    With the release transaction's exported `snapshot` and its `total` of rows, a large release
    is cut into runs (runs()): each later run's COPY starts at once on a connection of its own
    (LaterRun), so that its backend builds and sorts its rows on another core while this
    connection's run is built and read; then each is read in turn.
    """
    sample = sampled(chosen, total)
    cuts = batch_cuts(sample)
    key = lines_key(project)
    parts = runs(chosen, total, settings.RELEASE_CONNECTIONS, sample) if snapshot else [chosen]
    sides = _connect(len(parts) - 1)
    if len(sides) < len(parts) - 1:
        parts = [chosen]
    runs_later: list[LaterRun] = []
    with contextlib.ExitStack() as stack:
        for side in sides:  # closed last, whatever happened (a second close does nothing)
            stack.callback(side.close)
        for side, part in zip(sides, parts[1:], strict=True):
            assert snapshot is not None
            later = LaterRun(side, snapshot, choice(project, part, fmt, omit, cuts, key))
            stack.callback(later.close)
            runs_later.append(later)
        first = choice(project, parts[0], fmt, omit, cuts, key)
        if fmt == "csv":
            yield csv_header()
        with connection.cursor() as cursor:
            if runs_later:
                cursor.execute(SERIAL_PLANS)
            sql, values = first.pick(cursor)
            raw = cursor.cursor  # psycopg's own cursor: Django's wrapper has no copy()
            with raw.copy(sql, values) as copy:
                yield from _fields(copy)
        for later in runs_later:
            yield from later.blocks()


def _connect(count: int) -> list[psycopg.Connection[Any]]:
    """`count` more connections to the database, or none if the server refuses one (too many
    clients, say): the release is then written on its own connection, more slowly."""
    params = connection.get_connection_params()
    made: list[psycopg.Connection[Any]] = []
    try:
        for _ in range(count):
            made.append(psycopg.connect(**params, autocommit=True))
    except psycopg.OperationalError as error:
        for side in made:
            side.close()
        logger.warning("release written on one connection: another was refused: %s", error)
        return []
    return made
