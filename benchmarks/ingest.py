"""Ingest benchmark: generate N prediction rows and import them through the real command.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_bench \
        .venv/bin/python benchmarks/ingest.py --rows 1000000 --runs 3

Each run imports into a fresh project with `manage.py import_predictions` in a child process
and reports wall time, rows per second and the child's peak memory (ru_maxrss). As a peer in
the same run, it times a bare `psql \\copy` of pre-built item and prediction rows into two
indexed tables (the ceiling: no parsing, no validation, no dedup).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
WORDS = [
    "cat",
    "dog",
    "parrot",
    "rabbit",
    "walk",
    "groom",
    "board",
    "visit",
    "daily",
    "weekly",
    "senior",
    "puppy",
    "calm",
    "anxious",
]


def write_predictions(path: Path, rows: int, seed: int = 7) -> None:
    """N binary prediction rows with a short text payload, like a matching model's output."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as out:
        for i in range(rows):
            p = round(rng.betavariate(0.6, 0.6), 6)
            row = {
                "external_id": f"r{i:08d}",
                "payload": {
                    "pet": " ".join(rng.choices(WORDS, k=6)),
                    "service": " ".join(rng.choices(WORDS, k=5)),
                    "price": rng.randint(5, 200),
                },
                "model_version": "m1",
                "probabilities": {"match": p, "no_match": round(1 - p, 6)},
                "source": "bench",
                "split": "train" if i % 5 else "test",
            }
            out.write(json.dumps(row) + "\n")


def tree_rss(root: int) -> int:
    """Resident memory, in bytes, of a process and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        rss[int(entry.name)] = int(fields[21]) * resource.getpagesize()
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, parent in parents.items() if parent in frontier]
        tree.update(children)
        frontier = children
    return sum(rss.get(pid, 0) for pid in tree)


def run(command: list[str], env: dict[str, str]) -> tuple[float, str, int]:
    """Run a command; return its wall time, stdout and peak memory of its process tree."""
    start = time.perf_counter()
    child = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak = 0
    while child.poll() is None:
        peak = max(peak, tree_rss(child.pid))
        time.sleep(0.2)
    stdout, stderr = child.communicate()
    elapsed = time.perf_counter() - start
    if stderr.strip():
        print(stderr.strip())
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stdout}\n{stderr}")
    return elapsed, stdout, peak


def manage(env: dict[str, str], *args: str) -> tuple[float, str]:
    seconds, out, _ = run([PYTHON, "manage.py", *args], env)
    return seconds, out


def quorum_import(env: dict[str, str], data: Path, slug: str, workdir: Path) -> tuple[float, int]:
    """Import the file into a fresh project; return seconds and its processes' peak RSS."""
    spec = workdir / f"{slug}.json"
    spec.write_text(json.dumps({"slug": slug, "labels": ["match", "no_match"]}))
    manage(env, "create_project", "--spec", str(spec))
    seconds, out, peak = run([PYTHON, "manage.py", "import_predictions", slug, str(data)], env)
    mib = peak / 2**20
    print(f"  {slug}: {seconds:.2f} s  {out.strip()}  (peak RSS, all its processes: {mib:.0f} MiB)")
    return seconds, peak


def psql_copy_baseline(dsn: str, rows: int, workdir: Path) -> float:
    """Seconds for psql \\copy of pre-built rows into an indexed item and prediction table."""
    items, preds = workdir / "items.tsv", workdir / "preds.tsv"
    with items.open("w") as fi, preds.open("w") as fp:
        for i in range(rows):
            fi.write(f'{i}\tr{i:08d}\t{{"pet": "cat dog", "price": {i % 200}}}\t{i:064x}\n')
            fp.write(f"{i}\tm1\t[0.6, 0.4]\t0.6\n")
    sql = f"""
DROP TABLE IF EXISTS bench_item, bench_prediction;
CREATE TABLE bench_item (id bigint PRIMARY KEY, external_id text UNIQUE, payload jsonb,
  content_hash text);
CREATE INDEX ON bench_item (content_hash);
CREATE TABLE bench_prediction (item_id bigint, model_version text, probabilities jsonb,
  confidence float,
  UNIQUE (item_id, model_version));
\\timing on
\\copy bench_item FROM '{items}'
\\copy bench_prediction FROM '{preds}'
"""
    start = time.perf_counter()
    subprocess.run(
        ["psql", dsn, "-q", "-v", "ON_ERROR_STOP=1"],
        input=sql,
        text=True,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-rows", type=int, default=200_000)
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL", "")
    if not dsn.startswith("postgres"):
        raise SystemExit(
            "set DATABASE_URL to a PostgreSQL database (the benchmark is for PostgreSQL)"
        )
    env = {**os.environ, "DEBUG": "1", "PYTHONPATH": str(ROOT), "LOG_LEVEL": "DEBUG"}
    manage(env, "migrate", "-v0")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = workdir / "predictions.jsonl"
        write_predictions(data, args.rows)
        print(
            f"{args.rows:,} rows, {data.stat().st_size / 1e6:.0f} MB; "
            f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
        )
        stamp = int(time.time())
        results = [
            quorum_import(env, data, f"bench-{stamp}-{i}", workdir) for i in range(args.runs)
        ]
        seconds = statistics.median(s for s, _ in results)
        peak = max(p for _, p in results)
        base = [psql_copy_baseline(dsn, args.baseline_rows, workdir) for _ in range(args.runs)]
        base_rate = args.baseline_rows / statistics.median(base)
    rate = args.rows / seconds
    print(
        f"quorum import: median {seconds:.2f} s = {rate:,.0f} rows/s; "
        f"peak RSS (import process and its parsing workers together) {peak / 2**20:.0f} MiB"
    )
    print(
        f"psql \\copy of {args.baseline_rows:,} pre-built rows into two indexed tables: "
        f"median {statistics.median(base):.2f} s = {base_rate:,.0f} rows/s"
    )
    print(f"ratio quorum / bare copy: {rate / base_rate:.2f}")


if __name__ == "__main__":
    main()
