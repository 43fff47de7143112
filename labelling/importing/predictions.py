"""Prediction rows: validation against the project's label set, and canonical form for storage."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson

from core.exceptions import InputError
from core.text import unstorable, unstorable_json
from labelling.importing.rows import ErrorLog, Progress, iter_csv, iter_jsonl

SUM_TOLERANCE = 1e-6
MAX_SAMPLES = 1000
MAX_EXTERNAL_ID = 255
MAX_MODEL_VERSION = 100
JSONL_FIELDS = frozenset(
    {"external_id", "payload", "model_version", "probabilities", "samples", "source", "split"}
)
NUMBER_TYPES = frozenset({float, int})  # exact types: bool is refused
CSV_FIXED_COLUMNS = ("external_id", "model_version", "source", "split")


@dataclass(slots=True)
class PredictionRow:
    """One valid prediction row, in the form it is stored."""

    line: int
    external_id: str
    payload_json: str
    content_hash: str
    source: str
    split: str
    model_version: str
    probabilities_json: str
    samples_json: str | None
    digest: str
    predicted_label: str
    confidence: float


def canonical_json(value: Any) -> bytes:
    """Compact JSON with sorted keys: equal content always gives equal bytes."""
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def id_hash(external_id: str) -> int:
    """A 64-bit hash of an external id, the same in every process (unlike the built-in hash)."""
    digest = hashlib.blake2b(external_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def content_hash(payload: Any) -> str:
    """The sha256 of a payload's canonical JSON."""
    return hashlib.sha256(canonical_json(payload)).hexdigest()


class RowValidator:
    """Checks prediction rows against one project's label set."""

    def __init__(self, labels: Sequence[str], log: ErrorLog, *, csv_names: bool = False) -> None:
        self.labels = list(labels)
        self.label_set = frozenset(labels)
        self.log = log
        # CSV users know the probability columns as p:<label>; JSON users as probabilities.<label>.
        self.prob_field = "p:{}" if csv_names else "probabilities.{}"

    def fail(self, line: int, field: str, reason: str) -> None:
        self.log.add(InputError(reason, field=field, line=line))

    def text(
        self, obj: dict[str, Any], line: int, key: str, max_length: int, required: bool
    ) -> str | None:
        """A string field; integers are accepted for ids and turned into strings."""
        value = obj.get(key)
        if value is None or value == "":
            if required:
                self.fail(line, key, "is required" if value is None else "must not be empty")
                return None
            return ""
        if isinstance(value, int) and not isinstance(value, bool) and key == "external_id":
            value = str(value)
        if not isinstance(value, str):
            self.fail(line, key, f"must be a string, got {type(value).__name__}")
            return None
        if len(value) > max_length:
            self.fail(line, key, f"must be at most {max_length} characters")
            return None
        if (reason := unstorable(value)) is not None:
            self.fail(line, key, reason)
            return None
        return value

    def probability(self, value: Any, line: int, field: str) -> float | None:
        """One probability: a finite number in [0, 1]."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(line, field, f"must be a number, got {value!r}")
            return None
        if math.isnan(value):
            self.fail(line, field, "is NaN")
            return None
        if not 0.0 <= value <= 1.0:
            self.fail(line, field, f"must be between 0 and 1, got {value}")
            return None
        return float(value)

    def probabilities(self, value: Any, line: int) -> list[float] | None:
        """The probability object, as a list in label order summing to 1."""
        if not isinstance(value, dict):
            self.fail(
                line,
                "probabilities",
                "is required, as an object of label: probability"
                if value is None
                else "must be an object of label: probability",
            )
            return None
        ok = True
        for label in sorted(set(value) - self.label_set):
            ok = False
            self.fail(
                line, self.prob_field.format(label), f"{label!r} is not in the project's label set"
            )
        for label in self.labels:
            if label not in value:
                ok = False
                self.fail(line, self.prob_field.format(label), "is missing")
        if not ok:
            return None
        probs = [
            self.probability(value[label], line, self.prob_field.format(label))
            for label in self.labels
        ]
        if any(p is None for p in probs):
            return None
        return self._summing_to_one(probs, line, "probabilities")  # type: ignore[arg-type]

    def _summing_to_one(self, probs: list[float], line: int, field: str) -> list[float] | None:
        total = math.fsum(probs)
        if abs(total - 1.0) > SUM_TOLERANCE:
            self.fail(line, field, f"must sum to 1 (±{SUM_TOLERANCE:g}), got {total:.9g}")
            return None
        return probs

    def samples(self, value: Any, line: int) -> list[list[float]] | None:
        """Optional MC-dropout or ensemble outputs: a list of probability lists in label order."""
        k = len(self.labels)
        if not isinstance(value, list) or not value or len(value) > MAX_SAMPLES:
            self.fail(line, "samples", f"must be a list of 1 to {MAX_SAMPLES} probability lists")
            return None
        rows: list[list[float]] = []
        for i, sample in enumerate(value):
            field = f"samples[{i}]"
            if not isinstance(sample, list) or len(sample) != k:
                self.fail(line, field, f"must be a list of {k} probabilities in label order")
                return None
            probs = [self.probability(p, line, field) for p in sample]
            if any(p is None for p in probs) or self._summing_to_one(probs, line, field) is None:  # type: ignore[arg-type]
                return None
            rows.append(probs)  # type: ignore[arg-type]
        return rows

    def row(self, obj: Any, line: int) -> PredictionRow | None:
        """Validate one parsed row; record its errors and return None if it has any."""
        try:
            fast = self._fast_row(obj, line)
        except orjson.JSONEncodeError:
            # Lone surrogates parse but cannot be written: the checked path names them.
            fast = None
        return fast if fast is not None else self._checked_row(obj, line)

    def _fast_row(self, obj: Any, line: int) -> PredictionRow | None:
        """The common well-formed row without samples, checked in a few C-level steps.

        Anything unusual returns None and goes through `_checked_row`, which names each problem.
        Large imports spend most of their Python time here.
        """
        if type(obj) is not dict or not JSONL_FIELDS.issuperset(obj) or "samples" in obj:
            return None
        external_id, version = obj.get("external_id"), obj.get("model_version")
        source, split = obj.get("source"), obj.get("split")
        source = "" if source is None else source
        split = "" if split is None else split
        if not (
            type(external_id) is str
            and 0 < len(external_id) <= MAX_EXTERNAL_ID
            and type(version) is str
            and 0 < len(version) <= MAX_MODEL_VERSION
            and type(source) is str
            and len(source) <= 100
            and type(split) is str
            and len(split) <= 50
            and type(obj.get("payload")) is dict
        ):
            return None
        probabilities = obj.get("probabilities")
        if type(probabilities) is not dict or probabilities.keys() != self.label_set:
            return None
        probs = [probabilities[label] for label in self.labels]
        if not NUMBER_TYPES.issuperset(map(type, probs)):
            return None
        # NaN fails both comparisons, so it takes the slow path too.
        if not (
            min(probs) >= 0.0 and max(probs) <= 1.0 and abs(math.fsum(probs) - 1.0) <= SUM_TOLERANCE
        ):
            return None
        texts = external_id + version + source + split
        if "\x00" in texts or not (texts.isascii() or _encodable(texts)):
            return None
        row = self._stored(line, obj, external_id, version, source, split, probs, None)
        return None if "\\u0000" in row.payload_json else row

    def _checked_row(self, obj: Any, line: int) -> PredictionRow | None:
        if not isinstance(obj, dict):
            self.fail(line, "", "must be a JSON object")
            return None
        errors_before = self.log.total
        for unknown in sorted(set(obj) - JSONL_FIELDS):
            self.fail(line, unknown, "unknown field")
        external_id = self.text(obj, line, "external_id", MAX_EXTERNAL_ID, required=True)
        model_version = self.text(obj, line, "model_version", MAX_MODEL_VERSION, required=True)
        source = self.text(obj, line, "source", 100, required=False)
        split = self.text(obj, line, "split", 50, required=False)
        payload = obj.get("payload")
        if not isinstance(payload, dict):
            self.fail(line, "payload", "is required" if payload is None else "must be an object")
        elif (reason := unstorable_json(payload)) is not None:
            # PostgreSQL's text and jsonb cannot hold U+0000; SQLite could, so refuse it everywhere.
            self.fail(line, "payload", reason)
        probs = self.probabilities(obj.get("probabilities"), line)
        samples = self.samples(obj["samples"], line) if obj.get("samples") is not None else None
        if self.log.total > errors_before:
            return None
        return self._stored(line, obj, external_id, model_version, source, split, probs, samples)  # type: ignore[arg-type]

    def _stored(
        self,
        line: int,
        obj: dict[str, Any],
        external_id: str,
        model_version: str,
        source: str,
        split: str,
        probs: list[float],
        samples: list[list[float]] | None,
    ) -> PredictionRow:
        payload = canonical_json(obj["payload"])
        values = orjson.dumps(probs)
        samples_json = orjson.dumps(samples) if samples is not None else None
        top = probs.index(max(probs))
        return PredictionRow(
            line=line,
            external_id=external_id,
            payload_json=payload.decode(),
            content_hash=hashlib.sha256(payload).hexdigest(),
            source=source,
            split=split,
            model_version=model_version,
            probabilities_json=values.decode(),
            samples_json=samples_json.decode() if samples_json is not None else None,
            digest=hashlib.blake2b(
                values + b"|" + (samples_json or b""), digest_size=16
            ).hexdigest(),
            predicted_label=self.labels[top],
            confidence=float(probs[top]),
        )


def csv_row_to_object(cells: dict[str, str]) -> dict[str, Any]:
    """Turn a CSV record into the JSON row shape: p:<label> columns, fixed columns, payload."""
    probabilities: dict[str, Any] = {}
    payload: dict[str, str] = {}
    obj: dict[str, Any] = {"payload": payload, "probabilities": probabilities}
    for column, cell in cells.items():
        if column.startswith("p:"):
            probabilities[column[2:]] = _csv_number(cell)
        elif column in CSV_FIXED_COLUMNS:
            obj[column] = cell
        else:
            payload[column] = cell
    return obj


def _csv_number(cell: str) -> Any:
    try:
        return float(cell)
    except ValueError:
        # Leave the text in place: the validator then reports "must be a number, got '…'".
        return cell if cell.strip() else None


def check_csv_header(header: Sequence[str], labels: Sequence[str], log: ErrorLog) -> None:
    """Report the columns a prediction CSV must have."""
    for column in ("external_id", "model_version"):
        if column not in header:
            log.add(InputError("the header lacks this required column", field=column, line=1))
    for label in labels:
        if f"p:{label}" not in header:
            log.add(
                InputError(
                    f"the header lacks the probability column for label {label!r}",
                    field=f"p:{label}",
                    line=1,
                )
            )
    for column in header:
        if column.startswith("p:") and column[2:] not in labels:
            log.add(
                InputError(
                    f"{column[2:]!r} is not in the project's label set", field=column, line=1
                )
            )


def iter_prediction_rows(
    stream: IO[bytes],
    fmt: str,
    labels: Sequence[str],
    log: ErrorLog,
    progress: Progress | None = None,
) -> Iterator[PredictionRow]:
    """Yield the valid rows of a prediction file; errors go to `log`."""
    validator = RowValidator(labels, log, csv_names=fmt == "csv")
    if fmt == "jsonl":
        for line, obj in iter_jsonl(stream, log, progress):
            row = validator.row(obj, line)
            if row is not None:
                yield row
        return

    def header_check(header: list[str]) -> None:
        check_csv_header(header, labels, log)

    for line, cells in iter_csv(stream, log, progress, header_check):
        row = validator.row(csv_row_to_object(cells), line)
        if row is not None:
            yield row
