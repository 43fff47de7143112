"""Importing prediction files: JSON Lines and CSV, every bad input named, all or nothing."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from core.exceptions import InvalidInput
from labelling.models import Item, Prediction, Project
from labelling.services.imports import ImportResult, predictions_import

pytestmark = pytest.mark.django_db


def row(external_id: str = "a1", **fields: Any) -> dict[str, Any]:
    """A valid prediction row for the match/no_match project, with fields overridden."""
    base: dict[str, Any] = {
        "external_id": external_id,
        "payload": {"pet": f"pet of {external_id}", "service": "walking"},
        "model_version": "m1",
        "probabilities": {"match": 0.62, "no_match": 0.38},
        "source": "production",
        "split": "train",
    }
    base.update(fields)
    return base


def jsonl(*rows: Any) -> bytes:
    """JSON Lines bytes; str rows are written as they are (for malformed lines)."""
    return b"".join((r if isinstance(r, str) else json.dumps(r)).encode() + b"\n" for r in rows)


def run_import(project: Project, content: bytes, fmt: str = "jsonl") -> ImportResult:
    return predictions_import(project=project, stream=io.BytesIO(content), fmt=fmt)


def errors_of(
    project: Project, content: bytes, fmt: str = "jsonl"
) -> list[tuple[int | None, str, str]]:
    """The (line, field, reason) of each error; asserts that nothing was written."""
    items, predictions = Item.objects.count(), Prediction.objects.count()
    with pytest.raises(InvalidInput) as caught:
        run_import(project, content, fmt)
    assert (Item.objects.count(), Prediction.objects.count()) == (items, predictions)
    return [(e.line, e.field, e.reason) for e in caught.value.errors]


def test_it_imports_items_and_predictions_from_json_lines(project: Project) -> None:
    result = run_import(project, jsonl(row("a1"), row("a2", samples=[[0.7, 0.3], [0.5, 0.5]])))

    assert result == ImportResult(rows=2, new_items=2, new_predictions=2, unchanged=0)
    item = Item.objects.get(external_id="a2")
    assert item.payload == {"pet": "pet of a2", "service": "walking"}
    assert (item.source, item.split) == ("production", "train")
    assert len(item.content_hash) == 64
    prediction = item.predictions.get()
    assert prediction.probabilities == [0.62, 0.38]
    assert prediction.samples == [[0.7, 0.3], [0.5, 0.5]]
    assert (prediction.predicted_label, prediction.confidence) == ("match", 0.62)


def test_importing_the_same_file_twice_changes_nothing_the_second_time(project: Project) -> None:
    content = jsonl(row("a1"), row("a2"))
    run_import(project, content)
    ids = list(Prediction.objects.values_list("id", flat=True))

    again = run_import(project, content)

    assert again == ImportResult(rows=2, new_items=0, new_predictions=0, unchanged=2)
    assert list(Prediction.objects.values_list("id", flat=True)) == ids


def test_a_new_model_version_adds_a_prediction_never_a_second_item(project: Project) -> None:
    run_import(project, jsonl(row("a1")))

    result = run_import(
        project, jsonl(row("a1", model_version="m2", probabilities={"match": 0.1, "no_match": 0.9}))
    )

    assert (result.new_items, result.new_predictions) == (0, 1)
    assert Item.objects.count() == 1
    assert sorted(Prediction.objects.values_list("model_version", flat=True)) == ["m1", "m2"]


def test_exact_duplicate_rows_in_one_file_count_once(project: Project) -> None:
    result = run_import(project, jsonl(row("a1"), row("a1"), row("a2")))

    assert result == ImportResult(rows=3, new_items=2, new_predictions=2, unchanged=1)


def test_it_imports_csv_with_probability_columns_and_payload_fields(project: Project) -> None:
    content = (
        b"external_id,model_version,source,split,p:match,p:no_match,pet,service\n"
        b'b1,m3,production,test,0.45,0.55,"Anxious greyhound, hates dogs",Group walking\n'
        b"b2,m3,,,1,0,Goldfish,Pet sitter\n"
    )

    result = run_import(project, content, "csv")

    assert (result.new_items, result.new_predictions) == (2, 2)
    b1 = Item.objects.get(external_id="b1")
    assert b1.payload == {"pet": "Anxious greyhound, hates dogs", "service": "Group walking"}
    assert b1.split == "test"
    assert Prediction.objects.get(item__external_id="b2").probabilities == [1.0, 0.0]


def test_payloads_with_backslashes_tabs_and_newlines_survive_the_round_trip(
    project: Project,
) -> None:
    payload = {"text": 'C:\\pets\\cat\ttab\nnew line "quoted" \\N', "é": "ünïcode ✓"}
    run_import(project, jsonl(row("x\\1\tid", payload=payload, source="a\\b")))

    item = Item.objects.get()
    assert item.payload == payload
    assert (item.external_id, item.source) == ("x\\1\tid", "a\\b")


def test_probabilities_that_do_not_sum_to_one_are_rejected(project: Project) -> None:
    errors = errors_of(
        project, jsonl(row("a1"), row("a2", probabilities={"match": 0.6, "no_match": 0.5}))
    )

    assert errors == [(2, "probabilities", "must sum to 1 (±1e-06), got 1.1")]


def test_a_sum_within_one_in_a_million_is_accepted(project: Project) -> None:
    result = run_import(project, jsonl(row(probabilities={"match": 0.6000004, "no_match": 0.4})))

    assert result.new_predictions == 1


def test_a_label_outside_the_project_set_is_named(project: Project) -> None:
    errors = errors_of(
        project, jsonl(row(probabilities={"match": 0.5, "no_match": 0.4, "dog": 0.1}))
    )

    assert errors == [(1, "probabilities.dog", "'dog' is not in the project's label set")]


def test_a_missing_label_is_named(project: Project) -> None:
    errors = errors_of(project, jsonl(row(probabilities={"match": 1.0})))

    assert errors == [(1, "probabilities.no_match", "is missing")]


def test_nan_and_negative_probabilities_are_rejected(project: Project) -> None:
    nan_line = json.dumps(row()).replace("0.62", "NaN")
    content = jsonl(nan_line, row("a2", probabilities={"match": -0.1, "no_match": 1.1}))

    errors = errors_of(project, content)

    assert (1, "probabilities.match", "is NaN") in errors
    assert (2, "probabilities.match", "must be between 0 and 1, got -0.1") in errors
    assert (2, "probabilities.no_match", "must be between 0 and 1, got 1.1") in errors


@pytest.mark.parametrize("field", ["external_id", "model_version", "payload", "probabilities"])
def test_a_missing_required_field_is_named(project: Project, field: str) -> None:
    incomplete = row()
    del incomplete[field]

    errors = errors_of(project, jsonl(incomplete))

    assert [(line, name) for line, name, _ in errors] == [(1, field)]
    assert "required" in errors[0][2]


def test_an_unknown_field_is_named(project: Project) -> None:
    errors = errors_of(project, jsonl(row(probs={"match": 1})))

    assert errors == [(1, "probs", "unknown field")]


def test_malformed_json_names_its_line(project: Project) -> None:
    errors = errors_of(project, jsonl(row("a1"), '{"external_id": "a2",', "[1, 2]"))

    assert errors[0][0] == 2 and errors[0][2].startswith("malformed JSON")
    assert errors[1] == (3, "", "must be a JSON object")


def test_malformed_csv_names_its_line(project: Project) -> None:
    content = b"external_id,model_version,p:match,p:no_match\na1,m1,0.5,0.5\na2,m1,0.5\n"

    errors = errors_of(project, content, "csv")

    assert errors == [(3, "", "has 3 fields, the header has 4")]


def test_a_csv_header_without_required_columns_is_rejected(project: Project) -> None:
    errors = errors_of(project, b"external_id,p:match,p:cat\na1,0.5,0.5\n", "csv")

    assert (1, "model_version", "the header lacks this required column") in errors
    assert (
        1,
        "p:no_match",
        "the header lacks the probability column for label 'no_match'",
    ) in errors
    assert (1, "p:cat", "'cat' is not in the project's label set") in errors


def test_a_csv_probability_that_is_not_a_number_is_named(project: Project) -> None:
    content = b"external_id,model_version,p:match,p:no_match\na1,m1,high,0.5\n"

    errors = errors_of(project, content, "csv")

    assert errors == [(2, "p:match", "must be a number, got 'high'")]


def test_a_duplicate_external_id_with_different_content_is_rejected(project: Project) -> None:
    content = jsonl(row("a1"), row("a2"), row("a1", payload={"pet": "someone else"}))

    errors = errors_of(project, content)

    assert errors == [
        (3, "payload", "external_id 'a1' already appeared on line 1 with a different payload")
    ]


def test_the_same_id_and_version_with_other_probabilities_in_one_file_is_rejected(
    project: Project,
) -> None:
    content = jsonl(row("a1"), row("a1", probabilities={"match": 0.1, "no_match": 0.9}))

    errors = errors_of(project, content)

    assert [(line, field) for line, field, _ in errors] == [(2, "probabilities")]


def test_a_known_item_with_a_changed_payload_is_rejected(project: Project) -> None:
    run_import(project, jsonl(row("a1")))

    errors = errors_of(project, jsonl(row("a1", payload={"pet": "changed"})))

    assert [(line, field) for line, field, _ in errors] == [(1, "payload")]
    assert "already exists with a different payload" in errors[0][2]


def test_a_known_prediction_with_changed_probabilities_is_rejected(project: Project) -> None:
    run_import(project, jsonl(row("a1")))

    errors = errors_of(project, jsonl(row("a1", probabilities={"match": 0.2, "no_match": 0.8})))

    assert "already has a prediction of model_version 'm1'" in errors[0][2]


def test_a_file_of_the_wrong_encoding_is_rejected_with_its_line(project: Project) -> None:
    latin1 = jsonl(row("a1")) + '{"external_id": "café"}\n'.encode("latin-1")

    errors = errors_of(project, latin1)

    assert errors[0][0] == 2 and "not valid UTF-8" in errors[0][2]


def test_a_csv_of_the_wrong_encoding_is_rejected_with_its_line(project: Project) -> None:
    content = (
        "external_id,model_version,p:match,p:no_match,pet\na1,m1,0.5,0.5,cat\na2,m1,0.5,0.5,café\n"
    )

    errors = errors_of(project, content.encode("latin-1"), "csv")

    assert errors == [(3, "", "not valid UTF-8; save the file as UTF-8")]


def test_a_utf8_byte_order_mark_is_accepted(project: Project) -> None:
    assert run_import(project, b"\xef\xbb\xbf" + jsonl(row())).new_items == 1


def test_an_empty_file_is_rejected(project: Project) -> None:
    with pytest.raises(InvalidInput, match="holds no prediction rows"):
        run_import(project, b"\n\n")


def test_one_bad_row_among_many_writes_nothing(project: Project) -> None:
    rows = [row(f"a{i}") for i in range(500)] + [
        row("bad", probabilities={"match": 2, "no_match": -1})
    ]

    errors = errors_of(project, jsonl(*rows))

    assert {line for line, _, _ in errors} == {501}


def test_only_the_first_hundred_errors_are_kept_but_all_are_counted(project: Project) -> None:
    with pytest.raises(InvalidInput) as caught:
        run_import(project, jsonl(*["not json"] * 150))

    assert len(caught.value.errors) == 100
    assert caught.value.total_errors == 150
    assert "… and 50 more errors" in caught.value.report()


def test_progress_is_reported_in_bytes_read(project: Project) -> None:
    content = jsonl(*[row(f"a{i}") for i in range(50)])
    seen: list[int] = []

    predictions_import(
        project=project, stream=io.BytesIO(content), fmt="jsonl", progress=seen.append
    )

    assert seen and seen[-1] == len(content)


def test_samples_are_validated_in_label_order(project: Project) -> None:
    errors = errors_of(
        project, jsonl(row(samples=[[0.7, 0.3], [0.5]]), row("a2", samples=[[0.9, 0.3]]))
    )

    assert (1, "samples[1]", "must be a list of 2 probabilities in label order") in errors
    assert (2, "samples[0]", "must sum to 1 (±1e-06), got 1.2") in errors


# The command line.


@pytest.fixture
def write(tmp_path: Path) -> Callable[[str, bytes], Path]:
    def make(name: str, content: bytes) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    return make


def test_the_command_prints_the_counts(
    project: Project, write: Callable[[str, bytes], Path]
) -> None:
    out = io.StringIO()
    call_command("import_predictions", "pet-match", str(write("p.jsonl", jsonl(row()))), stdout=out)

    assert out.getvalue().strip() == "rows: 1, new items: 1, new predictions: 1, unchanged: 0"


def test_the_command_exits_1_and_names_each_error(
    project: Project, write: Callable[[str, bytes], Path]
) -> None:
    path = write("p.jsonl", jsonl(row(), row("a2", probabilities={"match": 0.9, "no_match": 0.9})))

    with pytest.raises(CommandError) as caught:
        call_command("import_predictions", "pet-match", str(path))

    assert caught.value.returncode == 1
    assert "line 2, field probabilities: must sum to 1" in str(caught.value)
    assert Item.objects.count() == 0


def test_the_command_takes_the_format_from_the_flag_or_the_extension(
    project: Project, write: Callable[[str, bytes], Path]
) -> None:
    path = write("predictions.txt", jsonl(row()))

    with pytest.raises(CommandError, match="cannot tell the format"):
        call_command("import_predictions", "pet-match", str(path))
    call_command(
        "import_predictions", "pet-match", str(path), "--format", "jsonl", stdout=io.StringIO()
    )

    assert Item.objects.count() == 1


def test_the_command_refuses_an_unknown_project_and_a_missing_file(
    project: Project, write: Callable[[str, bytes], Path]
) -> None:
    with pytest.raises(CommandError, match="no project with slug 'nope'"):
        call_command("import_predictions", "nope", str(write("p.jsonl", jsonl(row()))))
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_predictions", "pet-match", "/nonexistent/p.jsonl")


def test_the_shipped_examples_import_cleanly(project: Project) -> None:
    examples = Path(__file__).resolve().parents[2] / "examples"
    for name, fmt in [("predictions.jsonl", "jsonl"), ("predictions.csv", "csv")]:
        with open(examples / name, "rb") as stream:
            predictions_import(project=project, stream=stream, fmt=fmt)

    assert Item.objects.count() == 6


# Large files on PostgreSQL are parsed by worker processes, block by block.


@pytest.fixture
def parallel_blocks_of_seven(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Send every file down the parallel path, in blocks of seven lines; count the blocks."""
    from labelling.importing import parallel

    monkeypatch.setattr(parallel, "MIN_PARALLEL_BYTES", 0)
    monkeypatch.setattr(parallel, "BLOCK_LINES", 7)
    seen: list[int] = []
    collect = parallel.BlockParser._collect

    def counting(self: parallel.BlockParser, result: Any) -> parallel.Block:
        block = collect(self, result)
        seen.append(block.rows)
        return block

    monkeypatch.setattr(parallel.BlockParser, "_collect", counting)
    yield seen


@pytest.mark.needs_postgres
def test_the_parallel_path_imports_what_the_sequential_one_does(
    project: Project, parallel_blocks_of_seven: list[int]
) -> None:
    rows = [row(f"a{i}", samples=[[0.6, 0.4]] if i % 5 == 0 else None) for i in range(40)]
    content = jsonl(*[{k: v for k, v in r.items() if v is not None} for r in rows])

    result = run_import(project, content)
    again = run_import(project, content)

    assert result == ImportResult(rows=40, new_items=40, new_predictions=40, unchanged=0)
    assert parallel_blocks_of_seven[:6] == [7, 7, 7, 7, 7, 5]
    assert again.unchanged == 40
    assert Prediction.objects.get(item__external_id="a5").samples == [[0.6, 0.4]]


@pytest.mark.needs_postgres
@pytest.mark.usefixtures("parallel_blocks_of_seven")
def test_the_parallel_path_names_errors_by_their_line_across_blocks(project: Project) -> None:
    rows: list[Any] = [row(f"a{i}") for i in range(30)]
    rows[2] = "{broken"
    rows[20] = row("a20", probabilities={"match": 0.9, "no_match": 0.9})

    errors = errors_of(project, jsonl(*rows))

    assert [line for line, _, _ in errors] == [3, 21]


@pytest.mark.needs_postgres
@pytest.mark.usefixtures("parallel_blocks_of_seven")
def test_the_parallel_path_finds_repeats_in_different_blocks(project: Project) -> None:
    rows = [row(f"a{i}") for i in range(20)] + [row("a1"), row("a3", payload={"other": 1})]

    errors = errors_of(project, jsonl(*rows))

    assert errors == [
        (22, "payload", "external_id 'a3' already appeared on line 4 with a different payload")
    ]
    assert run_import(project, jsonl(*rows[:21])).unchanged == 1
