"""How a release's file is written: the writer's thread, PostgreSQL's binary COPY read back to
lines, and the data checks run on a second connection beside the write."""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection, transaction
from pytest_django import Settings

from labelling.models import Project, Release
from labelling.releases import checks, formats, pgcopy
from labelling.releases.checks import ChecksFailed
from labelling.releases.pgcopy import CopyFormatError, copy_chunks
from labelling.releases.rows import Filters, Selection, selection
from labelling.services import releases as release_service
from labelling.services.releases import ReleaseRequest, release_create
from tests.labelling.release_world import World, data_of, files_under, lines_of

HEADER = pgcopy.SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"


def row(text: bytes) -> memoryview:
    return memoryview(struct.pack(">hi", 1, len(text)) + text)


def fields(*messages: bytes | memoryview) -> list[bytes]:
    return list(pgcopy._fields(memoryview(m) for m in messages))


# The binary COPY's rows, read back


def test_binary_copy_rows_are_their_text_with_the_header_and_trailer_dropped() -> None:
    first = HEADER + bytes(row(b'{"a":1}\n'))
    assert fields(first, row(b'{"b":2}\n'), b"\xff\xff") == [b'{"a":1}\n', b'{"b":2}\n']
    # A header in a message of its own, with a header extension to skip.
    extended = pgcopy.SIGNATURE + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x03xyz"
    assert fields(extended, row(b"one\n"), b"\xff\xff") == [b"one\n"]
    assert fields(HEADER, b"\xff\xff") == []


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ((b"PGCOPY\n\xff\r\n\x01" + bytes(8), b"\xff\xff"), "signature"),
        ((HEADER, struct.pack(">hi", 2, 1) + b"x"), "one text field"),  # two fields
        ((HEADER, struct.pack(">hi", 1, -1)), "one text field"),  # NULL
        ((HEADER, struct.pack(">hi", 1, 9) + b"short"), "one text field"),  # cut short
        ((HEADER, b"\x00"), "one text field"),
    ],
)
def test_a_binary_copy_that_is_not_rows_of_one_text_is_an_error(
    messages: tuple[bytes, ...], problem: str
) -> None:
    with pytest.raises(CopyFormatError, match=problem):
        fields(*messages)


# The writer's thread


def test_the_writer_writes_hashes_and_counts_everything_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(formats, "FLUSH_BYTES", 10)
    monkeypatch.setattr(formats, "QUEUED_BLOCKS", 1)  # the reader waits for the writer
    pieces = [f"line {n}\n".encode() for n in range(500)]
    stream = io.BytesIO()
    with formats.HashingWriter(stream) as out:
        for piece in pieces:
            out.write(piece)
    assert stream.getvalue() == b"".join(pieces)
    assert out.sha256.hexdigest() == hashlib.sha256(b"".join(pieces)).hexdigest()
    assert (out.size, out.lines) == (len(b"".join(pieces)), 500)


class Failing(io.BytesIO):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def write(self, data: Any) -> int:
        if self.tell() >= self.after:
            raise OSError("disk full")
        return super().write(data)


def test_a_failed_write_is_raised_to_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats, "FLUSH_BYTES", 4)
    with pytest.raises(OSError, match="disk full"), formats.HashingWriter(Failing(8)) as out:
        for _ in range(10_000):  # a later write, or leaving the block, raises it
            out.write(b"data")
    assert not out._thread.is_alive()


def test_a_failure_found_while_leaving_still_stops_the_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(formats, "FLUSH_BYTES", 4)
    writer = formats.HashingWriter(Failing(0))
    with pytest.raises(OSError, match="disk full"), writer as out:
        out.write(b"data")  # the first block fails on the writer's thread
        out._thread.join(0.5)  # the end mark has not come: the thread still waits for blocks
        out.write(b"mo")  # buffered, so leaving must send it, and finds the failure
    assert not out._thread.is_alive()


def test_leaving_on_an_error_stops_the_thread_and_keeps_that_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(formats, "FLUSH_BYTES", 4)
    with pytest.raises(KeyError), formats.HashingWriter(Failing(0)) as out:
        out.write(b"data")
        raise KeyError("the reader's own failure")
    assert not out._thread.is_alive()
    assert not any(t.name == "release-writer" for t in threading.enumerate())


# On PostgreSQL


@pytest.fixture
def exports(settings: Settings, tmp_path: Path) -> Path:
    folder = tmp_path / "exports"
    settings.EXPORT_STORAGE = folder.as_uri()
    return folder


def later(chosen: Selection) -> bool:
    """Whether a run's selection is a later run's: one that starts at a cut (see runs())."""
    return '"C" >= %s' in chosen.where


def committed(test: Any) -> Any:
    """A test on PostgreSQL whose transactions commit: a release shares its snapshot with other
    connections only from a transaction of its own."""
    return pytest.mark.needs_postgres(pytest.mark.django_db(transaction=True)(test))


@pytest.mark.needs_postgres
def test_a_copys_lines_come_whole_and_the_labels_index_covers_what_a_release_reads(
    project: Project,
) -> None:
    World(project).item("a1")
    chosen = selection(project, Filters(), None)
    with transaction.atomic():
        data = b"".join(copy_chunks(project, chosen, "jsonl"))
    assert data.endswith(b"}\n") and json.loads(data)["external_id"] == "a1"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'label_project_item_cover'"
        )
        assert cursor.fetchone()[0].endswith(
            "(project_id, item_id) INCLUDE (labeller_id, created_at, state)"
        )


@pytest.mark.needs_postgres
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "manifest"])
def test_postgresqls_lines_say_what_the_python_writers_say(project: Project, fmt: str) -> None:
    world = World(project)
    world.item("a1", payload={"text": 'quotes " and \\ and\nnewline', "n": 1.5}, split="test")
    world.item("a2", label="no_match", gold="no_match", labellers=())
    world.item("a3", payload={"text": "ünïcode ✓", "list": [1, None]}, queued=False)
    world.item("a4", source="partner", confidence=0.5)
    chosen = selection(project, Filters(), None)
    with transaction.atomic():
        by_database = b"".join(copy_chunks(project, chosen, fmt, ["n"]))
        by_python = b"".join(release_service._python_lines(project, chosen, fmt, ["n"]))

    def cell(text: str) -> Any:
        # JSON in object and list cells; numbers as numbers (PostgreSQL writes 1.0 as 1).
        if text.startswith(("{", "[")):
            return json.loads(text)
        try:
            return float(text)
        except ValueError:
            return text

    def parsed(data: bytes) -> list[Any]:
        text = data.decode()
        if fmt == "csv":
            return [[cell(c) for c in r] for r in csv.reader(io.StringIO(text))]
        assert text.endswith("\n") and text.count("\n") == 4
        return [json.loads(line) for line in text.splitlines()]

    assert parsed(by_database) == parsed(by_python)
    assert len(parsed(by_database)) == (5 if fmt == "csv" else 4)


def commit_elsewhere(world: World, external_id: str, **fields: Any) -> None:
    """Create a decided item on another connection, committed at once, as another request
    would while a release runs."""

    def add() -> None:
        try:
            world.item(external_id, **fields)
        finally:
            connection.close()

    adding = threading.Thread(target=add)
    adding.start()
    adding.join()


def watched(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record the thread and backend each data check ran on."""
    seen: list[tuple[str, int]] = []
    for name in ("duplicate_content", "train_test_leakage", "payload_schema"):
        original = getattr(checks, name)

        def watching(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_backend_pid()")
                seen.append((threading.current_thread().name, cursor.fetchone()[0]))
            return _original(*args, **kwargs)

        monkeypatch.setattr(checks, name, watching)
    return seen


@committed
def test_the_checks_run_beside_the_write_on_another_connection_in_its_snapshot(
    make_project: Any, exports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = make_project(schema={"text": {"type": "string"}})
    world = World(project)
    world.item("a1", label="match", split="train")
    world.item("a2", label="no_match", split="test")
    seen = watched(monkeypatch)

    release = release_create(project=project)

    assert len(seen) == 3 and len({backend for _, backend in seen}) == 1
    assert all(name.startswith("release-checks") for name, _ in seen)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert seen[0][1] != cursor.fetchone()[0]
    assert [c["check"] for c in release.checks] == list(checks.CHECKS)
    assert all(c["passed"] for c in release.checks)
    assert release.class_counts == {"match": 1, "no_match": 1}
    assert release.label_source_counts == {"consensus": 2}
    assert [row["external_id"] for row in lines_of(release)] == ["a1", "a2"]
    # The same figures as the checks give in the release's own transaction (an outer one).
    with transaction.atomic():
        again = release_create(project=project, request=ReleaseRequest(override_reason="x"))
    assert again.checks[0] == release.checks[0] and again.checks[3] == release.checks[3]
    assert again.class_counts == release.class_counts
    assert len(seen) == 6 and all(name == "MainThread" for name, _ in seen[3:])


@committed
def test_a_check_failing_beside_the_write_blocks_the_release_and_leaves_nothing(
    make_project: Any, exports: Path
) -> None:
    world = World(make_project())
    world.item("a1", payload={"text": "same"})
    world.item("a2", payload={"text": "same"})

    with pytest.raises(ChecksFailed) as raised:
        release_create(project=world.project)

    assert [r.check for r in raised.value.results if not r.passed] == ["duplicate_content"]
    assert not Release.objects.exists() and files_under(exports) == []
    overridden = release_create(
        project=world.project, request=ReleaseRequest(override_reason="two real customers")
    )
    assert overridden.row_count == 2 and overridden.overrides[0]["check"] == "duplicate_content"


@committed
def test_an_error_in_the_checks_beside_the_write_leaves_nothing(
    make_project: Any, exports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(make_project())
    world.item("a1")

    def broken(*_: Any) -> None:
        raise RuntimeError("the checks' connection failed")

    monkeypatch.setattr(release_service.rows, "label_counts", broken)
    with pytest.raises(RuntimeError, match="checks' connection failed"):
        release_create(project=world.project)
    assert not Release.objects.exists() and files_under(exports) == []
    assert not any(t.name.startswith("release-checks") for t in threading.enumerate())


@committed
def test_the_checks_beside_the_write_see_the_releases_snapshot_not_later_commits(
    make_project: Any, exports: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World(make_project())
    world.item("a1", payload={"text": "same"})
    world.item("a2")
    original = checks.duplicate_content

    def after_a_duplicate_commits(*args: Any) -> Any:
        commit_elsewhere(world, "a3", payload={"text": "same"})
        return original(*args)

    monkeypatch.setattr(checks, "duplicate_content", after_a_duplicate_commits)
    release = release_create(project=world.project)

    # Committed while the release ran: neither its checks nor its rows see a3.
    assert release.row_count == 2 and release.checks[0]["passed"]
    assert [row["external_id"] for row in lines_of(release)] == ["a1", "a2"]


# CSV lines built by the query, cell by cell, as COPY's CSV mode wrote them

TRICKY = ["", "plain", "a,b", 'say "hi"', "line\nbreak", "cr\rhere", "\\.", "ünï ✓", " x ", None]


def copied_as_csv(sql: str, params: list[Any]) -> bytes:
    """What COPY's CSV mode writes for a query."""
    with (
        connection.cursor() as cursor,
        cursor.cursor.copy(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv)", params) as copy,
    ):
        return b"".join(bytes(chunk) for chunk in copy)


def selected(sql: str, params: list[Any]) -> bytes:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return "".join(r[0] for r in cursor.fetchall()).encode()


@pytest.mark.needs_postgres
def test_csv_cells_are_quoted_as_copys_csv_mode_quotes_them(db: None) -> None:
    values = "FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, n)"
    # Two columns: COPY quotes a lone \. only in a file of one column, never in a release's.
    expected = copied_as_csv(f"SELECT v, 1 {values} ORDER BY n", [TRICKY])
    assert expected.count(b'"') > 6  # the tricky ones quoted
    for known in ((), ("plain", "a,b", "")):  # plain constants, and values that are not plain
        cell = pgcopy._csv_text("v", known)
        ours = selected(f"SELECT COALESCE({cell}, '') || E',1\\n' {values} ORDER BY n", [TRICKY])
        assert ours == expected


@pytest.mark.needs_postgres
@pytest.mark.parametrize("omit", [[], ["n"]])
def test_a_payload_cell_is_quoted_as_copys_csv_mode_quotes_it(db: None, omit: list[str]) -> None:
    payloads = ["{}", '{"n": 1}', '{"a": "x,y", "n": 2}', '{"q": "say \\"hi\\"", "l": [1, 2]}']
    i = "(SELECT v::jsonb AS payload, n FROM unnest(%s::text[]) WITH ORDINALITY AS t(v, n)) i"
    value = "(i.payload - %s::text[])" if omit else "i.payload"
    expected = copied_as_csv(
        f"SELECT {value}::text, 1 FROM {i} ORDER BY n", [*([omit] if omit else []), payloads]
    )
    cell, params = pgcopy._csv_payload(omit)
    ours = selected(f"SELECT {cell} || E',1\\n' FROM {i} ORDER BY n", [*params, payloads])
    assert ours == expected


@pytest.mark.needs_postgres
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "manifest"])
def test_lines_come_joined_in_batches_that_make_the_same_file(
    make_project: Any, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    world = World(make_project())
    # Byte order differs from a language's: B2, Z4, a1, a10, a2, é3.
    for name in ("a1", "B2", "a10", "é3", "Z4", "a2"):
        world.item(name)
    project, chosen = world.project, selection(world.project, Filters(), None)

    def batches() -> list[bytes]:
        cuts = pgcopy.batch_cuts(pgcopy.sampled(chosen, 6))
        sql, params = pgcopy._statement(project, chosen, fmt, [], cuts)
        with connection.cursor() as cursor, cursor.cursor.copy(sql, params) as copy:
            return list(pgcopy._fields(copy))

    with transaction.atomic():
        whole = b"".join(copy_chunks(project, chosen, fmt))
        assert len(batches()) == 1
        # Every line counted as at least LINE_BYTES: two lines a batch.
        monkeypatch.setattr(pgcopy, "BATCH_BYTES", 2 * pgcopy.LINE_BYTES + 100)
        small = batches()
        assert b"".join(copy_chunks(project, chosen, fmt)) == whole
    assert [batch.count(b"\n") for batch in small] == [2, 2, 2]
    header = pgcopy.csv_header() if fmt == "csv" else b""
    assert header + b"".join(small) == whole
    lines = whole.decode().splitlines()
    ids = {
        "jsonl": lambda: [json.loads(line)["external_id"] for line in lines],
        "csv": lambda: [line.split(",")[0] for line in lines[1:]],
        "manifest": lambda: [json.loads(line)["external-id"] for line in lines],
    }[fmt]()
    assert ids == ["B2", "Z4", "a1", "a10", "a2", "é3"]


@pytest.mark.needs_postgres
def test_the_sample_holds_items_whose_ids_share_a_residue(
    make_project: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, other = World(make_project()), World(make_project(slug="other"))
    for n in range(24):  # created in turn: this project's ids are all odd, or all even
        ours.item(f"a{n:02d}")
        other.item(f"b{n:02d}")
    monkeypatch.setattr(pgcopy, "SAMPLE_ROWS", 12)  # one item in two
    chosen = selection(ours.project, Filters(), None)
    sample = pgcopy.sampled(chosen, 24)
    assert sample.every == 2 and 2 <= len(sample.ids) <= 22
    assert sample.ids == sorted(sample.ids) and set(sample.ids) <= {f"a{n:02d}" for n in range(24)}


def test_batches_are_cut_at_about_batch_bytes_by_the_samples_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pgcopy, "BATCH_BYTES", 1000)
    monkeypatch.setattr(pgcopy, "LINE_BYTES", 100)
    sample = pgcopy.Sample(list("abcdefg"), [0, 100, 300, 2000, 0, 0, 0], every=2)
    # Lines a sampled line stands for: 200, 400, 800, 4200, 200, 200, 200 bytes.
    assert pgcopy.batch_cuts(sample) == ["c", "d", "e"]
    assert pgcopy.batch_cuts(pgcopy.Sample([], [], every=1)) == []


# A large release written in runs, on several connections


def runs_write(
    monkeypatch: pytest.MonkeyPatch,
    rewrite: Callable[[Selection, pgcopy.Statement], pgcopy.Statement],
) -> None:
    """Each run of a release writes what `rewrite` makes of its COPY (every line built)."""

    def rewritten(
        project: Project, chosen: Selection, fmt: str, omit: Any, cuts: list[str], *_: Any
    ) -> pgcopy.Choice:
        built = pgcopy._statement(project, chosen, fmt, omit, cuts)
        return pgcopy.Choice(None, {"built": rewrite(chosen, built)})

    monkeypatch.setattr(pgcopy, "choice", rewritten)


@pytest.fixture
def in_runs(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> list[pgcopy.LaterRun]:
    """Every release of a row or more written in runs of three connections; the later runs
    started, recorded."""
    monkeypatch.setattr(pgcopy, "MIN_ROWS_PER_RUN", 1)
    settings.RELEASE_CONNECTIONS = 3
    started: list[pgcopy.LaterRun] = []

    class Recorded(pgcopy.LaterRun):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(pgcopy, "LaterRun", Recorded)
    return started


@pytest.fixture
def six(make_project: Any) -> World:
    """Six decided items, a1 to a6."""
    world = World(make_project())
    numbered(world, 6)
    return world


def numbered(world: World, count: int) -> list[str]:
    """`count` decided items whose external ids sort as numbers do not (a10 before a2)."""
    names = [f"a{n}" for n in range(1, count + 1)]
    for n, name in enumerate(names):
        world.item(name, split="train" if n % 2 else "test", labellers=("w1", "w2")[: n % 3])
    return sorted(names)


@pytest.mark.needs_postgres
def test_runs_cut_the_selection_into_consecutive_parts_that_hold_every_row_once(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcopy, "MIN_ROWS_PER_RUN", 4)
    names = numbered(World(project), 12)
    chosen = selection(project, Filters(), None)

    def ids(part: Any) -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                f"SELECT i.external_id FROM labelling_item i WHERE {part.where} "
                'ORDER BY i.external_id COLLATE "C"',
                part.params,
            )
            return [r[0] for r in cursor.fetchall()]

    sample = pgcopy.sampled(chosen, 12)
    assert (sample.ids, sample.every) == (names, 1)
    parts = pgcopy.runs(chosen, 12, 3, sample)
    assert len(parts) == 3
    assert all(3 <= len(ids(p)) <= 5 for p in parts)  # a quantile's value starts a run
    assert [name for p in parts for name in ids(p)] == names
    # At most one run a connection, and none under MIN_ROWS_PER_RUN rows.
    assert len(pgcopy.runs(chosen, 12, 2, sample)) == 2
    assert pgcopy.runs(chosen, 7, 3, sample) == [chosen]
    assert pgcopy.runs(chosen, 12, 1, sample) == [chosen]


@committed
@pytest.mark.parametrize("fmt", ["jsonl", "csv", "manifest"])
def test_a_release_written_in_runs_is_byte_for_byte_the_one_written_whole(
    make_project: Any,
    exports: Path,
    in_runs: list[pgcopy.LaterRun],
    settings: Settings,
    fmt: str,
) -> None:
    project = make_project()
    names = numbered(World(project), 9)
    request = ReleaseRequest(fmt=fmt, override_reason="numbered test data")

    in_three = release_create(project=project, request=request)
    assert len(in_runs) == 2  # the first run is the release's own connection's
    settings.RELEASE_CONNECTIONS = 1
    whole = release_create(project=project, request=request)

    assert len(in_runs) == 2
    assert data_of(in_three) == data_of(whole) and in_three.sha256 == whole.sha256
    text = data_of(in_three).decode()
    if fmt == "csv":
        assert text.startswith("external_id,") and text.count("external_id,") == 1
        assert [r[0] for r in list(csv.reader(io.StringIO(text)))[1:]] == names
    else:
        assert len(text.splitlines()) == 9
    assert not any(t.name == "release-run" for t in threading.enumerate())


@committed
def test_the_later_runs_see_the_releases_snapshot_not_later_commits(
    six: World, exports: Path, in_runs: list[pgcopy.LaterRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = pgcopy.runs

    def after_an_item_commits(*args: Any) -> Any:
        commit_elsewhere(six, "a9")  # sorts last: in the last run
        return original(*args)

    monkeypatch.setattr(pgcopy, "runs", after_an_item_commits)
    release = release_create(project=six.project, request=ReleaseRequest(override_reason="x"))

    assert len(in_runs) == 2
    assert release.row_count == 6
    assert [row["external_id"] for row in lines_of(release)] == [f"a{n}" for n in range(1, 7)]


@committed
def test_a_later_run_that_fails_fails_the_release_and_leaves_nothing(
    six: World, exports: Path, in_runs: list[pgcopy.LaterRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_later(chosen: Selection, statement: pgcopy.Statement) -> pgcopy.Statement:
        sql, params = statement
        failing = "SELECT (1 / (i.id - i.id))::text || '"  # fails on the first row
        return (sql.replace("SELECT '", failing, 1) if later(chosen) else sql), params

    runs_write(monkeypatch, broken_later)
    with pytest.raises(psycopg.errors.DivisionByZero):
        release_create(project=six.project, request=ReleaseRequest(override_reason="x"))
    assert len(in_runs) == 2
    assert not Release.objects.exists() and files_under(exports) == []
    assert not any(t.name == "release-run" for t in threading.enumerate())


@committed
def test_a_release_abandoned_midway_cancels_its_later_runs_statements(
    six: World, in_runs: list[pgcopy.LaterRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    def slow_later(chosen: Selection, statement: pgcopy.Statement) -> pgcopy.Statement:
        if not later(chosen):
            return statement
        return "COPY (SELECT pg_sleep(60)::text) TO STDOUT WITH (FORMAT binary)", []

    runs_write(monkeypatch, slow_later)
    project, chosen = six.project, selection(six.project, Filters(), None)
    # Watched from a connection of its own: the release's is busy with its COPY.
    watcher = psycopg.connect(**connection.get_connection_params(), autocommit=True)

    def sleeping() -> int:
        return int(
            watcher.execute(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' "
                "AND state = 'active' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
        )

    with watcher, transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        chunks = copy_chunks(project, chosen, "jsonl", snapshot=pgcopy.export_snapshot(), total=6)
        assert next(chunks).startswith(b'{"external_id":"a1"')
        for _ in range(100):  # both later runs' sleeps have begun
            if sleeping() == 2:
                break
            threading.Event().wait(0.1)
        else:
            pytest.fail("the later runs' statements never started")
        # As a failed write leaves it; the later runs' sleeps would hold it up for a minute.
        closing = threading.Thread(target=chunks.close)
        closing.start()
        closing.join(timeout=30)

        assert not closing.is_alive()
        assert not any(t.name == "release-run" for t in threading.enumerate())
        assert sleeping() == 0


@committed
def test_runs_plan_without_parallel_workers_of_their_own(
    six: World, in_runs: list[pgcopy.LaterRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    setting = (
        "COPY (SELECT current_setting('max_parallel_workers_per_gather') || ';') "
        "TO STDOUT WITH (FORMAT binary)"
    )
    runs_write(monkeypatch, lambda *_: (setting, []))
    project, chosen = six.project, selection(six.project, Filters(), None)

    def written(total: int) -> bytes:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            snapshot = pgcopy.export_snapshot()
            return b"".join(copy_chunks(project, chosen, "jsonl", snapshot=snapshot, total=total))

    assert written(6) == b"0;0;0;"  # three runs, each on a serial plan
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_parallel_workers_per_gather")
        default = cursor.fetchone()[0]
    assert written(1) == f"{default};".encode()  # one run: the server's own setting


@pytest.mark.needs_postgres
def test_a_refused_connection_closes_the_ones_made_and_asks_for_none(
    db: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    made: list[psycopg.Connection[Any]] = []
    connect = psycopg.connect

    def refusing_the_second(**params: Any) -> psycopg.Connection[Any]:
        if made:
            raise psycopg.OperationalError("FATAL: sorry, too many clients already")
        made.append(connect(**params))
        return made[-1]

    monkeypatch.setattr(psycopg, "connect", refusing_the_second)
    assert pgcopy._connect(2) == []
    assert made[0].closed
    assert "another was refused: FATAL: sorry, too many clients already" in caplog.text
    monkeypatch.setattr(psycopg, "connect", connect)
    two = pgcopy._connect(2)
    assert len(two) == 2 and not any(side.closed for side in two)
    for side in two:
        side.close()


@committed
def test_a_release_whose_runs_get_no_connection_is_written_whole(
    six: World, exports: Path, in_runs: list[pgcopy.LaterRun], monkeypatch: pytest.MonkeyPatch
) -> None:
    request = ReleaseRequest(override_reason="numbered test data")
    in_three = release_create(project=six.project, request=request)
    monkeypatch.setattr(pgcopy, "_connect", lambda count: [])  # as when the server refuses

    whole = release_create(project=six.project, request=request)

    assert len(in_runs) == 2  # the first release's later runs only
    assert data_of(whole) == data_of(in_three) and whole.row_count == 6


@pytest.mark.needs_postgres
@pytest.mark.django_db
@pytest.mark.parametrize("count", [0, 1, 2, 7, 64])
def test_a_lines_batch_is_how_many_cuts_its_id_is_at_or_past(count: int) -> None:
    values = sorted({f"{c}{n}" for c in ("a", "B", "é", "Z") for n in range(40)}, key=str.encode)
    cuts = values[5 :: max(1, len(values) // (count + 1))][:count]
    bucket, params = pgcopy._bucket('v COLLATE "C"', cuts)
    with connection.cursor() as cursor:
        cursor.execute(
            f'SELECT v, {bucket} FROM unnest(%s::text[]) v ORDER BY v COLLATE "C"',
            [*params, values],
        )
        found = cursor.fetchall()
    cut_bytes = [cut.encode() for cut in cuts]
    assert len(cuts) == count
    assert found == [(v, bisect.bisect_right(cut_bytes, v.encode())) for v in values]
