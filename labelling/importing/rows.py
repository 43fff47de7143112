"""Reading data files row by row: JSON Lines or CSV, strict UTF-8, every error with its line.

Readers stream: they hold one row at a time, whatever the file's size.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from core.exceptions import InputError, InvalidInput

FORMATS = ("jsonl", "csv")
MAX_STORED_ERRORS = 100
# CSV cells can be large payload fields (long texts); the csv module's default is 128 KiB.
csv.field_size_limit(16 * 1024 * 1024)

Progress = Callable[[int], None]


def detect_format(name: str, explicit: str | None = None) -> str:
    """The file format from --format, or else from the file name's extension."""
    if explicit:
        if explicit not in FORMATS:
            raise InvalidInput(f"unknown format {explicit!r}: use one of {', '.join(FORMATS)}")
        return explicit
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in {"jsonl", "ndjson"}:
        return "jsonl"
    if suffix == "csv":
        return "csv"
    raise InvalidInput(
        f"cannot tell the format of {name!r} from its extension: name it .jsonl or .csv, "
        "or pass the format explicitly"
    )


@dataclass
class ErrorLog:
    """The first errors of a file, and how many there were in all."""

    errors: list[InputError] = field(default_factory=list)
    total: int = 0

    def add(self, error: InputError) -> None:
        self.total += 1
        if len(self.errors) < MAX_STORED_ERRORS:
            self.errors.append(error)

    def merge(self, errors: list[InputError], total: int) -> None:
        """Add the errors another log found (in a worker process)."""
        self.errors.extend(errors[: MAX_STORED_ERRORS - len(self.errors)])
        self.total += total

    def raise_if_any(self, message: str) -> None:
        if self.total:
            raise InvalidInput(message, errors=self.errors, total_errors=self.total)


class _CountingReader(io.RawIOBase):
    """Wraps a binary stream and reports how many bytes have been read, for progress."""

    def __init__(self, raw: IO[bytes], progress: Progress | None) -> None:
        self.raw = raw
        self.progress = progress
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        if self.progress:
            self.progress(self.count)
        return len(data)


def _slow_parse(raw: bytes, number: int, log: ErrorLog) -> tuple[bool, Any]:
    """Parse a line orjson refused: name a bad encoding, or let NaN/Infinity through.

    orjson rejects the NaN and Infinity literals outright; the standard parser accepts them so
    that the validator can say "probabilities.match is NaN" instead of "malformed JSON".
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        log.add(
            InputError(
                f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                "save the file as UTF-8",
                line=number,
            )
        )
        return False, None
    if not text.strip():
        return False, None
    try:
        return True, json.loads(text)
    except ValueError as exc:
        log.add(InputError(f"malformed JSON: {exc}", line=number))
    except RecursionError:
        # orjson stops at 1024 levels; the standard parser runs out of stack further on.
        log.add(InputError("malformed JSON: nested too deep", line=number))
    return False, None


def parse_jsonl_line(raw: bytes, number: int, log: ErrorLog) -> tuple[bool, Any]:
    """(True, value) for a line that parses; (False, None) for a blank or a bad one (logged)."""
    try:
        # orjson checks UTF-8 itself: the common line costs one call.
        return True, orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _slow_parse(raw, number, log)


def jsonl_lines(stream: IO[bytes], progress: Progress | None) -> Iterator[bytes]:
    """The raw lines of a JSON Lines stream, without a leading byte-order mark."""
    reader = io.BufferedReader(_CountingReader(stream, progress), buffer_size=1 << 20)
    if reader.peek(3)[:3] == b"\xef\xbb\xbf":
        reader.read(3)
    return iter(reader)


def iter_jsonl(
    stream: IO[bytes], log: ErrorLog, progress: Progress | None
) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line of a JSON Lines stream."""
    for number, raw in enumerate(jsonl_lines(stream, progress), start=1):
        parsed, value = parse_jsonl_line(raw, number, log)
        if parsed:
            yield number, value


def iter_csv(
    stream: IO[bytes],
    log: ErrorLog,
    progress: Progress | None,
    check_header: Callable[[list[str]], None] | None = None,
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield (line number, row dict) for each record of a CSV stream; line 1 is the header.

    `check_header` adds the caller's own rules for the header (required columns).
    """
    text = io.TextIOWrapper(
        io.BufferedReader(_CountingReader(stream, progress), buffer_size=1 << 20),
        encoding="utf-8-sig",
        # Undecodable bytes become lone surrogates, found row by row below, so that the error
        # names the record's line (the decoder itself reads ahead of the csv module).
        errors="surrogateescape",
        newline="",
    )
    reader = csv.reader(text, strict=True)
    try:
        header = next(reader, None)
        if header is None:
            return
        if not _is_utf8(header):
            log.add(InputError("not valid UTF-8; save the file as UTF-8", line=1))
            return
        _check_header(header, log)
        if check_header:
            check_header(header)
        if log.total:
            return
        for row in reader:
            if not row:
                continue
            if not _is_utf8(row):
                log.add(InputError("not valid UTF-8; save the file as UTF-8", line=reader.line_num))
                continue
            if len(row) != len(header):
                log.add(
                    InputError(
                        f"has {len(row)} fields, the header has {len(header)}", line=reader.line_num
                    )
                )
                continue
            yield reader.line_num, dict(zip(header, row, strict=True))
    except csv.Error as exc:
        log.add(InputError(f"malformed CSV: {exc}", line=reader.line_num))


def _is_utf8(cells: list[str]) -> bool:
    joined = "".join(cells)
    if joined.isascii():
        return True
    try:
        joined.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_header(header: list[str], log: ErrorLog) -> None:
    seen: set[str] = set()
    for column in header:
        if not column.strip():
            log.add(InputError("the header has an empty column name", line=1))
        elif column in seen:
            log.add(
                InputError(f"column {column!r} appears twice in the header", field=column, line=1)
            )
        seen.add(column)
