"""Parsing a large JSON Lines file in worker processes while PostgreSQL writes.

Validation is pure Python and was the slowest step of a large import (about 14 µs a row on one
core). Here the main process only reads lines and feeds COPY; blocks of lines are validated and
turned into COPY text by a pool of worker processes, at most a few blocks ahead, so memory stays
bounded whatever the file's size. Blocks come back in file order, so errors keep their lines.
"""

from __future__ import annotations

import multiprocessing
import os
from array import array
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from multiprocessing.pool import AsyncResult, Pool
from types import TracebackType
from typing import IO

from core.exceptions import InputError
from labelling.importing.predictions import RowValidator, id_hash
from labelling.importing.rows import ErrorLog, Progress, jsonl_lines, parse_jsonl_line
from labelling.importing.staging import copy_line

BLOCK_LINES = 5000
# Below this, starting processes costs more than it saves.
MIN_PARALLEL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Block:
    """A block of valid rows as COPY text, the hashes of their ids, and the block's errors."""

    text: str
    hashes: bytes
    rows: int
    errors: list[InputError] = field(default_factory=list)
    total_errors: int = 0


def worth_parallel(size: int) -> bool:
    """Whether a file of this size should be parsed by worker processes here."""
    return (
        size >= MIN_PARALLEL_BYTES
        and (os.cpu_count() or 1) > 1
        # Celery's prefork workers are daemonic and may not start processes of their own.
        and not multiprocessing.current_process().daemon
    )


def parse_block(labels: Sequence[str], first_line: int, lines: list[bytes]) -> Block:
    """Validate a block of JSON Lines (in a worker process) and format its valid rows for COPY."""
    log = ErrorLog()
    validator = RowValidator(labels, log)
    parts: list[str] = []
    hashes: array[int] = array("q")
    for number, raw in enumerate(lines, start=first_line):
        parsed, value = parse_jsonl_line(raw, number, log)
        row = validator.row(value, number) if parsed else None
        if row is not None:
            parts.append(copy_line(row))
            hashes.append(id_hash(row.external_id))
    return Block("".join(parts), hashes.tobytes(), len(parts), log.errors, log.total)


class BlockParser:
    """A pool of parsing processes; start it before COPY opens, so that no thread is forked."""

    def __init__(self, labels: Sequence[str], log: ErrorLog) -> None:
        self.labels = tuple(labels)
        self.log = log
        self.processes = os.cpu_count() or 2
        self.pool: Pool | None = None

    def __enter__(self) -> BlockParser:
        self.pool = multiprocessing.get_context().Pool(self.processes)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.pool is not None
        self.pool.terminate()
        self.pool.join()

    def blocks(self, stream: IO[bytes], progress: Progress | None) -> Iterator[Block]:
        """The file's blocks in order, parsed a bounded number of blocks ahead."""
        assert self.pool is not None
        pending: deque[AsyncResult[Block]] = deque()
        lines, first = jsonl_lines(stream, progress), 1
        while chunk := list(islice(lines, BLOCK_LINES)):
            pending.append(self.pool.apply_async(parse_block, (self.labels, first, chunk)))
            first += len(chunk)
            if len(pending) >= 2 * self.processes:
                yield self._collect(pending.popleft())
        while pending:
            yield self._collect(pending.popleft())

    def _collect(self, result: AsyncResult[Block]) -> Block:
        block = result.get()
        self.log.merge(block.errors, block.total_errors)
        return block
