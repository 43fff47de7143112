"""Queue benchmark: select from N predictions with the contract's example policy, on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_bench \
        .venv/bin/python benchmarks/queue.py --rows 1000000 --runs 3

Imports N binary predictions once (benchmarks/ingest.py's generator), then times the real
`manage.py queue` command end to end in a child process, clearing the queue between runs so each
run selects from all N. The scoring and selection in numpy alone is in select_numerics.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ingest import ROOT, manage, write_predictions

POLICY = {
    "rules": [
        {"rule": "near_threshold", "band": 0.1},
        {"rule": "uncertain", "measure": "entropy", "top": 2000},
        {"rule": "confident", "min_confidence": 0.97, "fraction": 0.02},
        {"rule": "random", "fraction": 0.01},
    ],
    "budget": 5000,
}


def clear_queue(env: dict[str, str], slug: str) -> None:
    code = (
        "from labelling.models import QueueEntry;"
        f"QueueEntry.objects.filter(project__slug={slug!r}).delete()"
    )
    manage(env, "shell", "-c", code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit(
            "set DATABASE_URL to a PostgreSQL database (the benchmark is for PostgreSQL)"
        )
    env = {**os.environ, "DEBUG": "1", "PYTHONPATH": str(ROOT), "LOG_LEVEL": "DEBUG"}
    manage(env, "migrate", "-v0")
    slug = f"queue-bench-{int(time.time())}"
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data, spec, policy = (workdir / n for n in ("p.jsonl", "spec.json", "policy.json"))
        write_predictions(data, args.rows)
        spec.write_text(json.dumps({"slug": slug, "labels": ["match", "no_match"]}))
        policy.write_text(json.dumps(POLICY))
        manage(env, "create_project", "--spec", str(spec))
        manage(env, "import_predictions", slug, str(data))
        times = []
        for _ in range(args.runs):
            seconds, out = manage(env, "queue", slug, "--policy", str(policy))
            times.append(seconds)
            print(f"  {seconds:.2f} s  {' | '.join(out.strip().splitlines())}")
            clear_queue(env, slug)
    median = statistics.median(times)
    print(f"queue over {args.rows:,} predictions on PostgreSQL: median {median:.2f} s")


if __name__ == "__main__":
    main()
