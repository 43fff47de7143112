"""Problems benchmark: evaluating every model version on every problem, on PostgreSQL.

    DATABASE_URL=postgres://…/quorum_problems_bench .venv/bin/python benchmarks/problems.py \\
        [--items 100000 --versions 10 --problems 50 --patterns 20 --test 10000] [--runs 5]

It migrates the database, then creates a project of --items items with a
prediction of each of --versions model versions (imported through the real import service, one
file per version), gold answers for --problems × --patterns pattern items and --test items of
split `test`, and the problems; then times, --runs times: (a) `evaluation_compute` (every
version on every problem and the test split), (b) `problems_report` (what the CLI and the API
print), (c) `prediction_monitoring` of one version, and (d) what an import pays for the model
version record: `SELECT DISTINCT model_version` over a staged file of --items rows plus the upsert.
The project is deleted at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# benchmarks/queue.py would shadow the standard library's queue.
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings")
os.environ.setdefault("SECRET_KEY", "benchmark-only")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from labelling.models import Item, Project  # noqa: E402
from labelling.problems import prediction_monitoring, problems_report  # noqa: E402
from labelling.services.evaluation import evaluation_compute, model_versions_record  # noqa: E402
from labelling.services.imports import predictions_import  # noqa: E402
from labelling.services.problems import ProblemChange, problem_create  # noqa: E402
from labelling.services.projects import project_create_or_update  # noqa: E402
from labelling.spec import parse_spec  # noqa: E402

SLUG = "problems-bench"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--problems", type=int, default=50)
    parser.add_argument("--patterns", type=int, default=20)
    parser.add_argument("--test", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="profile one evaluation")
    return parser.parse_args()


def prediction_file(items: int, version: str, test: int, rng: random.Random) -> bytes:
    lines = []
    for i in range(items):
        p = round(rng.random(), 4)
        row = {
            "external_id": f"i{i}", "payload": {"text": f"item {i}"}, "model_version": version,
            "probabilities": {"match": p, "no_match": round(1 - p, 4)},
            "split": "test" if i < test else "",
        }  # fmt: skip
        lines.append(json.dumps(row))
    return "\n".join(lines).encode()


def set_up(args: argparse.Namespace) -> Project:
    Project.objects.filter(slug=SLUG).delete()
    project, _ = project_create_or_update(
        spec=parse_spec({"slug": SLUG, "labels": ["match", "no_match"]})
    )
    rng = random.Random(7)
    for v in range(args.versions):
        content = prediction_file(args.items, f"m{v}", args.test, rng)
        predictions_import(project=project, stream=io.BytesIO(content), fmt="jsonl")
    patterns = args.problems * args.patterns
    gold_ids = [f"i{i}" for i in range(args.test + patterns)]
    with transaction.atomic():
        for k, external_id in enumerate(gold_ids):
            Item.objects.filter(project=project, external_id=external_id).update(
                gold_label="match" if k % 3 else "no_match"
            )
    for p in range(args.problems):
        start = args.test + p * args.patterns
        ids = [f"i{i}" for i in range(start, start + args.patterns)]
        problem_create(
            project=project, user=None,
            change=ProblemChange(name=f"problem {p}", harm=1 + p % 5, items=ids),
        )  # fmt: skip
    return project


def timed(fn: object, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - started) * 1000)
    return times


def import_overhead(project: Project, items: int) -> None:
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE bench_staging AS SELECT 'm0'::text AS model_version "
            "FROM generate_series(1, %s) g",
            [items],
        )
        started = time.perf_counter()
        cursor.execute("SELECT DISTINCT model_version FROM bench_staging")
        names = [row[0] for row in cursor.fetchall()]
        model_versions_record(project=project, names=names, at=timezone.now())
        print(f"(d) distinct + upsert over {items} staged rows: "
              f"{(time.perf_counter() - started) * 1000:.1f} ms")  # fmt: skip
        cursor.execute("DROP TABLE bench_staging")


def main() -> None:
    args = arguments()
    call_command("migrate", verbosity=0)
    print(f"machine: {os.cpu_count()} cores, {platform.platform()}; load {os.getloadavg()}")
    print(f"database: {connection.vendor} {connection.settings_dict['NAME']}")
    started = time.perf_counter()
    project = set_up(args)
    print(f"set-up in {time.perf_counter() - started:.0f} s: {args.items} items × "
          f"{args.versions} versions, {args.problems} problems × {args.patterns} patterns, "
          f"{args.test} test items")  # fmt: skip
    try:
        for name, fn in (
            ("(a) evaluation_compute", lambda: evaluation_compute(project=project)),
            ("(b) problems_report", lambda: problems_report(project)),
            ("(c) prediction_monitoring", lambda: prediction_monitoring(project, "m0")),
        ):
            times = timed(fn, args.runs)
            print(f"{name}: median {statistics.median(times):.1f} ms, "
                  f"runs {', '.join(f'{t:.0f}' for t in times)} ms")  # fmt: skip
        import_overhead(project, args.items)
        if args.profile:
            import cProfile
            import pstats

            profiler = cProfile.Profile()
            profiler.runcall(evaluation_compute, project=project)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    finally:
        Project.objects.filter(slug=SLUG).delete()


if __name__ == "__main__":
    main()
