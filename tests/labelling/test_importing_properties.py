"""Property tests of the file importers (predictions, gold answers, labels): whatever the bytes,
an import either succeeds or raises InvalidInput whose every error names its line and reason,
and a refused file writes nothing at all."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.exceptions import InvalidInput
from labelling.models import Item, Label, Labeller, Prediction, Project, QueueEntry
from labelling.policy import parse_policy
from labelling.services.gold import gold_import
from labelling.services.imports import predictions_import
from labelling.services.labels import labels_import
from labelling.services.queueing import queue_select

pytestmark = pytest.mark.django_db
LABELS = ("match", "no_match")
FORMATS = st.sampled_from(["jsonl", "csv"])

# ---- values: plausible ones, and junk of every JSON type ----

HUGE = st.sampled_from([10**20, -(10**20), 2**63, 2**31, 10**300, 1e308, -1e308, 5e-324])
NUMBERS = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(2**70), max_value=2**70)
    | HUGE
)
# Text no database column can keep: NUL (PostgreSQL refuses it) and lone surrogates (no UTF-8).
UNSTORABLE = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff"])
TEXT = st.text(max_size=12) | st.sampled_from(["", " ", "é", "a\nb", "a,b"]) | UNSTORABLE
JUNK = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
IDS = st.sampled_from(["i0", "i1", "i2", "i3", "new-1", "new-2"]) | UNSTORABLE | TEXT


@st.composite
def probabilities(draw: st.DrawFn) -> dict[str, Any]:
    p = draw(st.floats(min_value=0, max_value=1))
    return {"match": p, "no_match": 1 - p}


def prediction_row() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "external_id": IDS,
            "payload": st.dictionaries(st.sampled_from(["text", "pet"]), TEXT, max_size=2),
            "model_version": st.sampled_from(["m1", "m2"]),
            "probabilities": probabilities(),
        },
        optional={
            "samples": st.lists(st.sampled_from([[0.5, 0.5], [0.9, 0.1]]), max_size=2),
            "source": st.sampled_from(["production", "import"]),
            "split": st.sampled_from(["train", "test"]),
        },
    )


def gold_row() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"external_id": IDS, "label": st.sampled_from(LABELS)})


AWARE = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
TIMES = AWARE.map(lambda t: t.isoformat()) | st.sampled_from(
    [
        "2026-02-30T10:00:00",
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-14:00",
        "2026-01-01T00:00:00+23:59",
        "2026-01-01 25:00",
        "yesterday",
    ]
)


def label_row() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "external_id": IDS,
            "labeller": st.sampled_from(["w1", "w2", "w3"]) | UNSTORABLE,
            "label": st.sampled_from(LABELS),
        },
        optional={
            "created_at": TIMES,
            "duration_ms": st.integers(min_value=0, max_value=10**6) | HUGE,
        },
    )


@st.composite
def mutated(draw: st.DrawFn, rows: st.SearchStrategy[dict[str, Any]]) -> list[dict[str, Any]]:
    """Valid rows, some with a field replaced by junk, dropped or added."""
    chosen = draw(st.lists(rows, min_size=1, max_size=3))
    for row in chosen:
        # Mostly one change at most: a file with an error in every row hides the rest.
        for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
            field = draw(st.sampled_from([*row, "extra"]))
            if draw(st.booleans()) and field in row:
                del row[field]
            else:
                row[field] = draw(JUNK)
    return chosen


# ---- files: JSON Lines or CSV, then damaged as files are ----


def jsonl_bytes(rows: list[Any]) -> bytes:
    # json.dumps writes NaN and Infinity as the bare literals some exporters produce.
    return b"".join(json.dumps(row).encode("utf-8", "surrogatepass") + b"\n" for row in rows)


def csv_bytes(rows: list[dict[str, Any]]) -> bytes:
    """CSV with one column per field (p:<label> for probabilities); other values as JSON."""
    flat = [_flat(row) for row in rows]
    header = list(dict.fromkeys(key for row in flat for key in row))
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([row.get(key, "") for key in header] for row in flat)
    return out.getvalue().encode("utf-8", "surrogatepass")


def _flat(row: dict[str, Any]) -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in row.items():
        if key == "probabilities" and isinstance(value, dict):
            flat |= {f"p:{label}": _cell(p) for label, p in value.items()}
        elif key == "payload" and isinstance(value, dict):
            flat |= {str(name): _cell(cell) for name, cell in value.items()}
        else:
            flat[key] = _cell(value)
    return flat


def _cell(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def damaged(draw: st.DrawFn, content: bytes) -> bytes:
    """The file as it is, truncated, re-encoded, with a byte-order mark, junk bytes spliced in,
    a number too long to read or an array nested too deep."""
    damage = draw(
        st.just("none")
        | st.sampled_from(["truncate", "utf-16", "latin-1", "bom", "splice", "long-number", "deep"])
    )
    if damage == "truncate":
        return content[: draw(st.integers(min_value=0, max_value=len(content)))]
    if damage in ("utf-16", "latin-1"):
        return content.decode("utf-8", "surrogatepass").encode(damage, "replace")
    if damage == "bom":
        return b"\xef\xbb\xbf" + content
    at = draw(st.integers(min_value=0, max_value=len(content)))
    insert = {
        "splice": draw(st.binary(min_size=1, max_size=8)),
        "long-number": b"1" * 5000,
        "deep": b"[" * 100_000,
        "none": b"",
    }[damage]
    return content[:at] + insert + content[at:]


def files(rows: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[tuple[str, bytes]]:
    """(format, bytes): any bytes at all, or near-valid rows in either format, maybe damaged."""
    raw = st.tuples(FORMATS, st.binary(max_size=300))
    written = st.tuples(FORMATS, mutated(rows)).map(
        lambda pair: (pair[0], jsonl_bytes(pair[1]) if pair[0] == "jsonl" else csv_bytes(pair[1]))
    )
    return raw | written.flatmap(lambda pair: st.tuples(st.just(pair[0]), damaged(pair[1])))


# ---- the property ----


def counts() -> dict[str, Any]:
    """Everything an import may write, to compare before and after a refused one."""
    return {
        "items": Item.objects.count(),
        "predictions": Prediction.objects.count(),
        "queue": QueueEntry.objects.count(),
        "labels": Label.objects.count(),
        "labellers": Labeller.objects.count(),
        "gold": sorted(Item.objects.values_list("external_id", "gold_label")),
        "states": sorted(Item.objects.values_list("external_id", "state")),
    }


def either_imports_or_names_the_problem(run: Callable[[], object]) -> None:
    before = counts()
    try:
        run()
    except InvalidInput as refused:
        assert counts() == before, "a refused file wrote something"
        assert refused.message
        for error in refused.errors:
            assert error.reason and error.line is not None and error.line >= 1, error
            assert str(error.line) in refused.report()


@pytest.fixture
def populated(project: Project) -> Project:
    """Items i0–i3 with predictions, queued, so that imports meet existing rows."""
    rows = [
        {
            "external_id": f"i{n}",
            "payload": {"text": f"item {n}"},
            "model_version": "m1",
            "probabilities": {"match": 0.25 * n, "no_match": 1 - 0.25 * n},
        }
        for n in range(4)
    ]
    predictions_import(project=project, stream=io.BytesIO(jsonl_bytes(rows)), fmt="jsonl")
    queue_select(
        project=project, policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]})
    )
    return project


DEEP = b"[" * 100_000 + b"\n"


@given(file=files(prediction_row()))
@example(file=("jsonl", DEEP))
def test_a_prediction_file_is_imported_whole_or_refused_with_reasons(
    populated: Project, file: tuple[str, bytes]
) -> None:
    fmt, content = file
    either_imports_or_names_the_problem(
        lambda: predictions_import(project=populated, stream=io.BytesIO(content), fmt=fmt)
    )


@given(file=files(gold_row()))
@example(file=("jsonl", DEEP))
@example(file=("jsonl", b'{"external_id": "\\ud800", "label": "match"}'))
@example(file=("jsonl", b'{"external_id": "a\\u0000", "label": "match"}'))
def test_a_gold_file_is_imported_whole_or_refused_with_reasons(
    populated: Project, file: tuple[str, bytes]
) -> None:
    fmt, content = file
    either_imports_or_names_the_problem(
        lambda: gold_import(project=populated, stream=io.BytesIO(content), fmt=fmt)
    )


@given(file=files(label_row()))
@example(file=("jsonl", b'{"external_id": "\\ud800", "labeller": "w1", "label": "match"}'))
@example(file=("jsonl", b'{"external_id": "i0", "labeller": "\\udfff", "label": "match"}'))
@example(file=("csv", b"external_id,labeller,label,created_at\ni0,w1,match,2026-02-30T10:00\n"))
@example(
    file=("jsonl", b'{"external_id": "i0", "labeller": "w1", "label": "match", "duration_ms": []}')
)
@example(
    file=(
        "jsonl",
        b'{"external_id": "i0", "labeller": "w1", "label": "match", "duration_ms": 1e400}',
    )
)
@example(file=("jsonl", b""))
def test_a_label_file_is_imported_whole_or_refused_with_reasons(
    populated: Project, file: tuple[str, bytes]
) -> None:
    fmt, content = file
    either_imports_or_names_the_problem(
        lambda: labels_import(project=populated, stream=io.BytesIO(content), fmt=fmt)
    )


def test_label_times_out_of_range_are_refused_by_line_and_field(populated: Project) -> None:
    lines = [
        {"external_id": "i0", "labeller": "w1", "label": "match", "created_at": when}
        for when in ("2026-02-30T10:00:00", "0001-01-01T00:00:00+05:00")
    ]
    lines.append({"external_id": "i1", "labeller": "w1", "label": "match", "duration_ms": 2**40})

    with pytest.raises(InvalidInput) as refused:
        labels_import(project=populated, stream=io.BytesIO(jsonl_bytes(lines)), fmt="jsonl")

    assert [(e.line, e.field) for e in refused.value.errors] == [
        (1, "created_at"),
        (2, "created_at"),
        (3, "duration_ms"),
    ]
    assert not Label.objects.exists()


def test_a_line_nested_too_deep_is_refused_by_line(populated: Project) -> None:
    content = jsonl_bytes([{"external_id": "x"}]) + b"[" * 100_000 + b"\n"

    with pytest.raises(InvalidInput) as refused:
        predictions_import(project=populated, stream=io.BytesIO(content), fmt="jsonl")

    assert [(e.line, e.field) for e in refused.value.errors][-1] == (2, "")
    assert "nested" in refused.value.errors[-1].reason


def test_a_gold_answer_for_an_unknown_item_names_its_line(populated: Project) -> None:
    content = jsonl_bytes(
        [{"external_id": "i0", "label": "match"}, {"external_id": "zz", "label": "match"}]
    )

    with pytest.raises(InvalidInput) as refused:
        gold_import(project=populated, stream=io.BytesIO(content), fmt="jsonl")

    assert [(e.line, e.field) for e in refused.value.errors] == [(2, "external_id")]
