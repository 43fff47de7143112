"""Outside-crowd benchmark: Quorum's own cost of a Mechanical Turk batch, publish to close.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_bench \
        PYTHONPATH=. .venv/bin/python benchmarks/crowd_sync.py --items 1000 --assignments 3

Mechanical Turk is the in-memory fake of the tests (tests/labelling/crowd/fakes.py; every call's
parameters checked against botocore's service model, no network), so the figures are Quorum's
side alone: database writes, answer parsing, decisions. Amazon's latency (tens to hundreds of
milliseconds a call) comes on top in production: a HIT per item to publish, a listing per HIT
to synchronise, a call per assignment to settle. Each run creates a fresh project with `--items`
queued items, publishes them in one batch, lets three simulated workers answer every HIT,
then times the synchronisation (every answer becomes a label), the consensus run it asks for,
the settlement (every assignment approved) and the close (every HIT expired and deleted).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# benchmarks/queue.py would shadow the standard library's queue module.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import django  # noqa: E402

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only")
os.environ.setdefault("QUORUM_PUBLIC_URL", "https://quorum.example.org")
django.setup()

from django.core.management import call_command  # noqa: E402

from labelling.crowd import platforms, services  # noqa: E402
from labelling.crowd.mturk import MTurkPlatform  # noqa: E402
from labelling.models import Project  # noqa: E402
from labelling.policy import parse_policy  # noqa: E402
from labelling.services.consensus import consensus_compute  # noqa: E402
from labelling.services.imports import predictions_import  # noqa: E402
from labelling.services.projects import project_create_or_update  # noqa: E402
from labelling.services.queueing import queue_select  # noqa: E402
from labelling.spec import parse_spec  # noqa: E402
from tests.labelling.crowd.fakes import FakeMTurk  # noqa: E402

LABELS = ("match", "no_match")


def project_with_items(slug: str, n: int, overlap: int) -> Project:
    spec = {"slug": slug, "labels": ["match", "no_match"], "gold_rate": 0,
            "overlap": {"min": overlap, "max": overlap}}  # fmt: skip
    project, _ = project_create_or_update(spec=parse_spec(spec))
    rows = "\n".join(
        json.dumps({"external_id": f"i{k}", "payload": {"text": f"item {k}"},
                    "model_version": "m1", "probabilities": {"match": 0.6, "no_match": 0.4}})
        for k in range(n)
    )  # fmt: skip
    predictions_import(project=project, stream=io.BytesIO(rows.encode()), fmt="jsonl")
    queue_select(
        project=project, policy=parse_policy({"rules": [{"rule": "random", "fraction": 1}]})
    )
    return project


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def run(items: int, assignments: int) -> dict[str, float]:
    fake = FakeMTurk(page_size=100)
    platforms.PLATFORMS["mturk"] = lambda: MTurkPlatform(fake)
    project = project_with_items(f"crowd-bench-{time.time_ns()}"[:50], items, assignments)
    times: dict[str, float] = {}
    fields = {"size": items, "reward": "0.05", "assignments": assignments, "user": None}

    def publish() -> Any:
        created = services.crowd_batch_create(project=project, platform="mturk", **fields)
        return services.crowd_batch_publish(batch=created)

    times["publish"], batch = timed(publish)
    for k, hit_id in enumerate(batch.tasks.values_list("remote_id", flat=True)):
        for worker in range(assignments):
            # Items alternate between the classes; each worker is wrong on one item in ten.
            right = (k * 7 + worker) % 10 != 0
            fake.work(hit_id, f"W{worker}", LABELS[(k % 2) ^ (not right)])
    times["sync"], new = timed(lambda: services.crowd_batch_sync(batch=batch))
    assert new == items * assignments, new
    times["sync again"], again = timed(lambda: services.crowd_batch_sync(batch=batch))
    assert again == 0, again
    times["consensus"], _ = timed(lambda: consensus_compute(project=project))
    times["settle"], result = timed(lambda: services.crowd_batch_settle(batch=batch))
    assert result.paid == items * assignments and not result.errors, result
    times["close"], _ = timed(lambda: services.crowd_batch_close(batch=batch))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--assignments", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    runs = [run(args.items, args.assignments) for _ in range(args.runs)]
    n = args.items * args.assignments
    print(f"{args.items} HITs x {args.assignments} assignments = {n} answers; {args.runs} runs")
    per_hit = {"publish", "close", "sync again"}
    for step in runs[0]:
        values = [r[step] for r in runs]
        median = statistics.median(values)
        unit, count = ("HIT", args.items) if step in per_hit else ("answer", n)
        listed = ", ".join(f"{v:.2f}" for v in values)
        print(
            f"{step:>10}: median {median:6.2f} s ({listed}), {1000 * median / count:.2f} ms/{unit}"
        )


if __name__ == "__main__":
    main()
