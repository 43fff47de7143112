"""A small world of items in chosen states, for the release tests."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from labelling.models import (
    Consensus,
    Item,
    Label,
    Labeller,
    Prediction,
    Project,
    QueueEntry,
    QueuePolicy,
    Release,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def data_of(release: Release) -> bytes:
    """The bytes of a release's data file in a folder."""
    return (Path(release.location.removeprefix("file://")) / release.data_file).read_bytes()


def lines_of(release: Release) -> list[dict[str, Any]]:
    """The rows of a JSON Lines release."""
    return [json.loads(line) for line in data_of(release).splitlines()]


def files_under(folder: Path) -> list[Path]:
    """Every file under a folder (none when it does not exist)."""
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


class World:
    """Builds items in chosen states with their predictions, queue entries, labels, consensus."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.policy = QueuePolicy.objects.create(project=project, version=1, rules=[])
        self.workers: dict[str, Labeller] = {}
        self.n = 0

    def worker(self, name: str) -> Labeller:
        if name not in self.workers:
            self.workers[name] = Labeller.objects.create(
                project=self.project, platform="import", worker_id=name
            )
        return self.workers[name]

    def item(
        self,
        external_id: str,
        *,
        state: str = "approved",
        label: str = "match",
        payload: dict[str, Any] | None = None,
        split: str = "",
        source: str = "production",
        labellers: tuple[str, ...] = ("w1", "w2", "w3"),
        gold: str = "",
        queued: bool = True,
        confidence: float = 0.97,
    ) -> Item:
        self.n += 1
        payload = {"text": f"content of {external_id}"} if payload is None else payload
        item = Item.objects.create(
            project=self.project,
            external_id=external_id,
            payload=payload,
            content_hash=hashlib.sha256(
                orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)
            ).hexdigest(),
            source=source,
            split=split,
            created_at=T0,
            state=state,
            gold_label=gold,
            gold_set_at=T0 if gold else None,
            # As the services record a decision: the time it was made.
            decided_at=datetime.now(UTC) if state in ("approved", "resolved") else None,
        )
        Prediction.objects.create(
            item=item,
            model_version="m1",
            probabilities=[0.6, 0.4],
            predicted_label="match",
            confidence=0.6,
            digest="d",
            created_at=T0,
        )
        Prediction.objects.create(
            item=item,
            model_version="m2",
            probabilities=[0.55, 0.45],
            predicted_label="match",
            confidence=0.55,
            digest="d",
            created_at=T0 + timedelta(days=1),
        )
        if queued:
            QueueEntry.objects.create(
                project=self.project,
                item=item,
                rule="near_threshold",
                score=0.1,
                policy=self.policy,
                model_version="m1",
                priority=self.n,
            )
        for i, name in enumerate(labellers):
            self.label(item, name, label, T0 + timedelta(hours=i + 1))
        if labellers:
            Consensus.objects.create(
                item=item,
                label=label,
                confidence=confidence,
                agreement=1.0,
                n_labels=len(labellers),
                computed_at=datetime.now(UTC),
            )
        return item

    def label(self, item: Item, name: str, value: str, at: datetime, state: str = "valid") -> Label:
        return Label.objects.create(
            project=self.project,
            item=item,
            labeller=self.worker(name),
            value=value,
            source="import",
            created_at=at,
            state=state,
        )


def fail_after_first_chunk(monkeypatch: Any, error: Exception, seen: Callable[[], None]) -> None:
    """Make release writing fail after its first chunk reached the disk (whatever the database:
    PostgreSQL's COPY or the Python writer); `seen` runs just before the failure."""
    from labelling.releases import formats
    from labelling.services import releases

    original = releases._chunks
    monkeypatch.setattr(formats, "FLUSH_BYTES", 1)

    def breaking(*args: Any) -> Iterator[bytes]:
        with contextlib.closing(original(*args)) as chunks:
            yield next(chunks)
            yield next(chunks, b"")
            seen()
            raise error

    monkeypatch.setattr(releases, "_chunks", breaking)
