"""Label rows collected elsewhere: `{"external_id", "labeller", "label"}` with optional
`created_at` (ISO 8601) and `duration_ms`, as JSON Lines or CSV with those columns."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from django.utils.dateparse import parse_datetime

from core.exceptions import InputError
from core.text import unstorable
from labelling.importing.rows import ErrorLog, iter_csv, iter_jsonl

REQUIRED = ("external_id", "labeller", "label")
FIELDS = frozenset({*REQUIRED, "created_at", "duration_ms"})
MAX_ID = 255
# The largest duration the database column holds (about 24 days).
MAX_DURATION_MS = 2**31 - 1


@dataclass(frozen=True, slots=True)
class LabelRow:
    """One valid label row."""

    line: int
    external_id: str
    labeller: str
    label: str
    created_at: datetime | None
    duration_ms: int | None


class _Checker:
    def __init__(self, labels: Sequence[str], log: ErrorLog) -> None:
        self.labels = frozenset(labels)
        self.log = log

    def fail(self, line: int, field: str, reason: str) -> None:
        self.log.add(InputError(reason, field=field, line=line))

    def ident(self, obj: dict[str, Any], key: str, line: int) -> str:
        value = obj.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID:
            self.fail(
                line, key, f"is required, as a non-empty string of at most {MAX_ID} characters"
            )
            return ""
        if (reason := unstorable(value)) is not None:
            self.fail(line, key, reason)
        return value

    def label(self, value: Any, line: int) -> str:
        text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
        if not isinstance(text, str) or text not in self.labels:
            self.fail(line, "label", f"{value!r} is not in the project's label set")
            return ""
        return text

    def created_at(self, value: Any, line: int) -> datetime | None:
        if value in (None, ""):
            return None
        try:
            parsed = parse_datetime(value) if isinstance(value, str) else None
        except ValueError:
            parsed = None  # well-formed but impossible, such as 30 February
        if parsed is None:
            self.fail(line, "created_at", f"must be an ISO 8601 date and time, got {value!r}")
            return None
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        try:
            # Stored in UTC: an offset can push the first or last day past the calendar's ends.
            return parsed.astimezone(UTC)
        except OverflowError:
            self.fail(line, "created_at", f"is out of range in UTC, got {value!r}")
            return None

    def duration(self, value: Any, line: int) -> int | None:
        if value in (None, ""):
            return None
        try:
            number = int(value) if not isinstance(value, bool | float) else None
        except (TypeError, ValueError):
            number = None
        if number is None or not 0 <= number <= MAX_DURATION_MS:
            self.fail(
                line,
                "duration_ms",
                f"must be a whole number of milliseconds from 0 to {MAX_DURATION_MS}, "
                f"got {value!r}",
            )
            return None
        return number

    def row(self, obj: Any, line: int) -> LabelRow | None:
        if not isinstance(obj, dict):
            self.fail(line, "", "must be a JSON object")
            return None
        before = self.log.total
        for unknown in sorted(set(obj) - FIELDS):
            self.fail(line, unknown, "unknown field")
        row = LabelRow(
            line=line,
            external_id=self.ident(obj, "external_id", line),
            labeller=self.ident(obj, "labeller", line),
            label=self.label(obj.get("label"), line),
            created_at=self.created_at(obj.get("created_at"), line),
            duration_ms=self.duration(obj.get("duration_ms"), line),
        )
        return row if self.log.total == before else None


def iter_label_rows(
    stream: IO[bytes], fmt: str, labels: Sequence[str], log: ErrorLog
) -> Iterator[LabelRow]:
    """Yield the valid rows of a label file; errors go to `log`."""
    check = _Checker(labels, log)

    def header_check(header: list[str]) -> None:
        for column in REQUIRED:
            if column not in header:
                log.add(InputError("the header lacks this required column", field=column, line=1))

    rows = (
        iter_jsonl(stream, log, None)
        if fmt == "jsonl"
        else iter_csv(stream, log, None, header_check)
    )
    for line, obj in rows:
        row = check.row(obj, line)
        if row is not None:
            yield row
