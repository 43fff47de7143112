"""Release data files: JSON Lines, CSV and Ground Truth-style output manifests, written in
buffered chunks through a sha256 so that a million rows never sit in memory."""

from __future__ import annotations

import csv
import hashlib
import io
import queue
import threading
from collections.abc import Callable
from typing import Any, BinaryIO

import orjson

from labelling.models import Project
from labelling.releases.rows import FIELDS

FORMATS = ("jsonl", "csv", "manifest")
EXTENSIONS = {"jsonl": "jsonl", "csv": "csv", "manifest": "manifest"}
CONTENT_TYPES = {
    "jsonl": "application/jsonl",
    "csv": "text/csv; charset=utf-8",
    "manifest": "application/jsonl",
}
FLUSH_BYTES = 1024 * 1024
# Blocks waiting for the writer's thread at most (memory: this many times FLUSH_BYTES).
QUEUED_BLOCKS = 8
# Cells that hold JSON in CSV: objects and lists have no other faithful CSV form.
JSON_CELLS = frozenset({"payload", "labellers", "probabilities"})


class HashingWriter:
    """Buffers bytes and, on a thread of its own, writes them in large blocks and hashes and
    counts what it wrote.

    The thread keeps the reader of the rows from waiting while a block goes to disk: on
    PostgreSQL the database writes the rows, and a reader busy writing a block lets its socket
    fill and the database stall (hashing and file writes release the GIL). Use it as a context
    manager: leaving the block waits for the last write and raises any error the writes met;
    leaving it on an error stops the thread and writes nothing more.
    """

    def __init__(self, stream: BinaryIO) -> None:
        self.stream = stream
        self.sha256 = hashlib.sha256()
        self.size = 0
        # Newlines in the bytes handed over so far (rows, but for CSV cells holding newlines).
        self.lines = 0
        self.buffer: list[bytes] = []
        self.buffered = 0
        self._blocks: queue.Queue[bytes | None] = queue.Queue(maxsize=QUEUED_BLOCKS)
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="release-writer", daemon=True)

    def __enter__(self) -> HashingWriter:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        try:
            if kind is None and self.buffer:
                self._send()
        finally:
            self._blocks.put(None)
            self._thread.join()
        if kind is None and self._failure is not None:
            raise self._failure

    def write(self, data: bytes) -> None:
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered >= FLUSH_BYTES:
            self._send()

    def _send(self) -> None:
        if self._failure is not None:
            raise self._failure
        block = b"".join(self.buffer)
        self.buffer, self.buffered = [], 0
        self.lines += block.count(b"\n")
        self._blocks.put(block)

    def _drain(self) -> None:
        # Takes every block until the end mark, even after a failure, so that a put never waits
        # for ever.
        while (block := self._blocks.get()) is not None:
            if self._failure is not None:
                continue
            try:
                self.stream.write(block)
                self.sha256.update(block)
                self.size += len(block)
            except BaseException as error:  # raised again in the reader's thread
                self._failure = error


def jsonl_line(row: dict[str, Any]) -> bytes:
    """A data row as one JSON line, keys in FIELDS order."""
    return orjson.dumps(row) + b"\n"


def _cell(name: str, value: Any) -> str:
    if value is None:
        return ""
    if name in JSON_CELLS:
        return orjson.dumps(value).decode()
    return repr(value) if isinstance(value, float) else str(value)


class CsvLines:
    """Data rows as CSV lines (header first), with JSON in the payload, labellers and
    probabilities cells."""

    def __init__(self) -> None:
        self.text = io.StringIO()
        self.writer = csv.writer(self.text, lineterminator="\n")

    def header(self) -> bytes:
        return self._line(list(FIELDS))

    def _line(self, cells: list[str]) -> bytes:
        self.text.seek(0)
        self.text.truncate()
        self.writer.writerow(cells)
        return self.text.getvalue().encode()

    def __call__(self, row: dict[str, Any]) -> bytes:
        return self._line([_cell(name, row[name]) for name in FIELDS])


def ground_truth_line(project: Project) -> Callable[[dict[str, Any]], bytes]:
    """A writer of Amazon Ground Truth-style output-manifest lines for the project."""
    attribute, classes = project.slug, {label: i for i, label in enumerate(project.labels)}
    job_name = f"labeling-job/{project.slug}"

    def line(row: dict[str, Any]) -> bytes:
        metadata = {
            "class-name": row["label"],
            "confidence": row["confidence"],
            "creation-date": row["approved_at"],
            "human-annotated": "yes",
            "job-name": job_name,
            "type": "groundtruth/text-classification",
            "label-source": row["label_source"],
            "labellers": row["labellers"],
        }
        return (
            orjson.dumps(
                {
                    "source": row["payload"],
                    "external-id": row["external_id"],
                    attribute: classes.get(row["label"]),
                    f"{attribute}-metadata": metadata,
                }
            )
            + b"\n"
        )

    return line


def line_writer(fmt: str, project: Project) -> tuple[bytes, Callable[[dict[str, Any]], bytes]]:
    """The header bytes and the line function of a format."""
    if fmt == "csv":
        lines = CsvLines()
        return lines.header(), lines
    if fmt == "manifest":
        return b"", ground_truth_line(project)
    return b"", jsonl_line
