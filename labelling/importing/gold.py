"""Gold rows: `{"external_id": "a1", "label": "match"}` (JSON Lines), or CSV external_id,label."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from core.exceptions import InputError
from core.text import unstorable
from labelling.importing.rows import ErrorLog, iter_csv, iter_jsonl

FIELDS = frozenset({"external_id", "label"})


@dataclass(frozen=True, slots=True)
class GoldRow:
    """One valid gold answer."""

    line: int
    external_id: str
    label: str


def _row(obj: Any, line: int, labels: frozenset[str], log: ErrorLog) -> GoldRow | None:
    if not isinstance(obj, dict):
        log.add(InputError("must be a JSON object", line=line))
        return None
    before = log.total
    for unknown in sorted(set(obj) - FIELDS):
        log.add(InputError("unknown field", field=unknown, line=line))
    external_id, label = obj.get("external_id"), obj.get("label")
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        external_id = str(external_id)
    if not isinstance(external_id, str) or not external_id:
        log.add(InputError("is required, as a non-empty string", field="external_id", line=line))
    elif (reason := unstorable(external_id)) is not None:
        log.add(InputError(reason, field="external_id", line=line))
    if not isinstance(label, str) or label not in labels:
        log.add(
            InputError(f"{label!r} is not in the project's label set", field="label", line=line)
        )
    return GoldRow(line, external_id, label) if log.total == before else None  # type: ignore[arg-type]


def iter_gold_rows(
    stream: IO[bytes], fmt: str, labels: Sequence[str], log: ErrorLog
) -> Iterator[GoldRow]:
    """Yield the valid rows of a gold file; errors go to `log`."""
    label_set = frozenset(labels)

    def header_check(header: list[str]) -> None:
        for column in sorted(FIELDS - set(header)):
            log.add(InputError("the header lacks this required column", field=column, line=1))

    rows = (
        iter_jsonl(stream, log, None)
        if fmt == "jsonl"
        else iter_csv(stream, log, None, header_check)
    )
    for line, obj in rows:
        row = _row(obj, line, label_set, log)
        if row is not None:
            yield row
