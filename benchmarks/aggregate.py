"""Aggregation benchmark: `manage.py aggregate` over a million labels on PostgreSQL, end to end.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_bench \
        .venv/bin/python benchmarks/aggregate.py --runs 3

Simulates a crowd with a known truth (200,000 items x 5 labels, 2,000 labellers, 3 classes: most
labellers 70-95 % accurate with class-dependent confusion, some answering at random), creates a
fresh project and loads the labels into it, then times the real `manage.py aggregate SLUG` and
`manage.py aggregate SLUG --json > /dev/null` in child processes (process start included),
sampling the resident memory of the child every 0.2 s. Finally it compares the stored consensus
with the simulated truth, next to majority vote on the same labels.

Set-up, not part of the timings: `--load import` (the default) writes the labels as JSON Lines
and loads them through the real `manage.py import_labels` (two to four minutes for a million
labels); `--load copy` instead COPYs the same item, labeller and label rows straight into their
tables as the import leaves them (items `collecting`, no queue entries), in about 35 s. Before
each timed run, VACUUM (ANALYZE) of the tables aggregation touches stands in for autovacuum,
which the benchmark server runs without, and a CHECKPOINT keeps earlier writes out of the timing
(`--no-vacuum` skips both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import numpy as np

# Run as a script, this folder comes first on sys.path, where queue.py and labelling.py would hide
# the standard library's queue (psycopg needs it) and the labelling package: reach the sibling
# scripts as the benchmarks package instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent), *(p for p in sys.path if p and Path(p).resolve() != HERE)]
import psycopg  # noqa: E402

from benchmarks.ingest import PYTHON, ROOT, manage, tree_rss  # noqa: E402
from labelling.numerics.aggregation import dawid_skene, majority_vote  # noqa: E402

LABELS = ("positive", "neutral", "negative")
PRIORS = (0.5, 0.3, 0.2)
# sha256 of the canonical JSON of {}: what import_labels stores for an item it creates.
EMPTY_PAYLOAD_HASH = "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
NULL = "\\N"  # COPY's text format for NULL
VACUUMED = ("labelling_label", "labelling_item", "labelling_labeller", "labelling_consensus",
            "labelling_escalation")  # fmt: skip


@dataclass(frozen=True)
class Crowd:
    """Simulated labels as parallel codes, the truth per item and which labellers are random."""

    items: np.ndarray
    workers: np.ndarray
    labels: np.ndarray
    durations: np.ndarray
    truth: np.ndarray
    random: np.ndarray

    @property
    def sizes(self) -> tuple[int, int, int]:
        return self.truth.size, self.random.size, len(LABELS)


def _confusions(random: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Per labeller, a true class x answer matrix: 70-95 % right, errors split unevenly."""
    n = random.size
    base = rng.uniform(0.70, 0.95, (n, 1))
    # Class-dependent: each class has its own accuracy around the labeller's, and its own
    # split of the errors between the other classes.
    right = np.clip(base + rng.normal(0.0, 0.04, (n, k)), 0.55, 0.99)
    split = rng.dirichlet(np.ones(k - 1), (n, k))
    confusion = np.zeros((n, k, k))
    for t in range(k):
        others = [c for c in range(k) if c != t]
        confusion[:, t, t] = right[:, t]
        confusion[:, t, others] = (1.0 - right[:, t])[:, None] * split[:, t]
    confusion[random] = 1.0 / k
    return confusion


def _assign(n_items: int, n_workers: int, per_item: int, rng: np.random.Generator) -> np.ndarray:
    """Choose `per_item` distinct labellers for each item (n_items x per_item)."""
    chosen = rng.integers(0, n_workers, (n_items, per_item))
    clash = np.ones(n_items, bool)
    while clash.any():
        chosen[clash] = rng.integers(0, n_workers, (int(clash.sum()), per_item))
        ordered = np.sort(chosen, axis=1)
        clash = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    return chosen


def simulate(n_items: int, per_item: int, n_workers: int, n_random: int, seed: int) -> Crowd:
    """A seeded crowd over items of a known class (priors 0.5, 0.3, 0.2)."""
    rng = np.random.default_rng(seed)
    k = len(LABELS)
    truth = rng.choice(k, n_items, p=PRIORS).astype(np.int64)
    random = np.zeros(n_workers, bool)
    random[rng.choice(n_workers, n_random, replace=False)] = True
    confusion = _confusions(random, k, rng)
    items = np.repeat(np.arange(n_items, dtype=np.int64), per_item)
    workers = _assign(n_items, n_workers, per_item, rng).ravel()
    rows = confusion[workers, truth[items]].cumsum(axis=1)
    labels = np.minimum((rng.random(items.size)[:, None] > rows).sum(axis=1), k - 1)
    # Milliseconds: about 6 s a label, random clickers about 1.5 s, one in ten unknown (-1).
    median = np.where(random, 1500.0, 6000.0)[workers]
    durations = (median * rng.lognormal(0.0, 0.4, items.size)).astype(np.int64)
    durations[rng.random(items.size) < 0.1] = -1
    return Crowd(items, workers, labels.astype(np.int64), durations, truth, random)


def external_id(item: int) -> str:
    return f"it{item:07d}"


def worker_id(worker: int) -> str:
    return f"w{worker:05d}"


def write_labels(path: Path, crowd: Crowd) -> None:
    """The labels as import_labels reads them (JSON Lines)."""
    with path.open("w", encoding="utf-8") as out:
        for item, worker, label, ms in zip(
            crowd.items.tolist(), crowd.workers.tolist(), crowd.labels.tolist(),
            crowd.durations.tolist(), strict=True,
        ):  # fmt: skip
            duration = f', "duration_ms": {ms}' if ms >= 0 else ""
            out.write(
                f'{{"external_id": "{external_id(item)}", "labeller": "{worker_id(worker)}", '
                f'"label": "{LABELS[label]}"{duration}}}\n'
            )


def run(command: list[str], env: dict[str, str], stdout: IO[str] | int) -> tuple[float, int, str]:
    """Run a command with stdout to `stdout`; return wall time, peak tree RSS and stderr."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=stdout, stderr=err, text=True)
        peak = 0
        while child.poll() is None:
            peak = max(peak, tree_rss(child.pid))
            time.sleep(0.2)
        elapsed = time.perf_counter() - start
        err.seek(0)
        stderr = err.read()
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{stderr}")
    return elapsed, peak, stderr


def create_project(env: dict[str, str], slug: str, workdir: Path) -> None:
    spec = workdir / f"{slug}.json"
    spec.write_text(json.dumps({"slug": slug, "labels": list(LABELS)}))
    manage(env, "create_project", "--spec", str(spec))


def load_with_import(env: dict[str, str], slug: str, data: Path) -> None:
    """Set-up through the real `manage.py import_labels`."""
    with tempfile.TemporaryFile("w+") as out:
        command = [PYTHON, "manage.py", "import_labels", slug, str(data)]
        seconds, peak, _ = run(command, env, out)
        out.seek(0)
        print(f"  $ {' '.join(command[1:])}\n    {out.read().strip()}")
    print(f"  set-up by import_labels: {seconds:.1f} s, peak RSS {peak / 2**20:.0f} MiB")


def _copy(cursor: psycopg.Cursor[Any], table: str, columns: str, lines: Iterator[str]) -> None:
    with cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        block: list[str] = []
        for line in lines:
            block.append(line)
            if len(block) == 50_000:
                copy.write("".join(block))
                block.clear()
        copy.write("".join(block))


def _ids(cursor: psycopg.Cursor[Any], sql: str, project_id: int) -> np.ndarray:
    cursor.execute(sql, [project_id])
    return np.array([row[0] for row in cursor.fetchall()], np.int64)


def load_with_copy(dsn: str, slug: str, crowd: Crowd) -> None:
    """Set-up only, not the import path: COPY the rows the import would leave into their tables."""
    started = time.perf_counter()
    now = datetime.now(UTC).isoformat()
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT id FROM labelling_project WHERE slug = %s", [slug])
        project = cursor.fetchone()[0]  # type: ignore[index]
        _copy(
            cursor, "labelling_item",
            "project_id, external_id, payload, content_hash, source, split, created_at, state, "
            "gold_label",
            (f"{project}\t{external_id(i)}\t{{}}\t{EMPTY_PAYLOAD_HASH}\timport\t\t{now}\t"
             "collecting\t\n" for i in range(crowd.truth.size)),
        )  # fmt: skip
        _copy(
            cursor, "labelling_labeller",
            "created_at, updated_at, project_id, platform, worker_id, role, status, n_labels, "
            "gold_answers, flags",
            (f"{now}\t{now}\t{project}\timport\t{worker_id(w)}\tcrowd\tactive\t0\t0\t[]\n"
             for w in range(crowd.random.size)),
        )  # fmt: skip
        # External and worker ids sort like their codes, so ORDER BY gives the code order.
        item_pk = _ids(cursor, "SELECT id FROM labelling_item WHERE project_id = %s "
                       "ORDER BY external_id", project)  # fmt: skip
        worker_pk = _ids(cursor, "SELECT id FROM labelling_labeller WHERE project_id = %s "
                         "ORDER BY worker_id", project)  # fmt: skip
        batch = f"import-{datetime.now(UTC):%Y%m%dT%H%M%S.%f}"
        _copy(
            cursor, "labelling_label",
            "project_id, item_id, labeller_id, value, source, batch, duration_ms, created_at, "
            "state, void_reason",
            (f"{project}\t{i}\t{w}\t{LABELS[v]}\timport\t{batch}\t{NULL if d < 0 else d}\t"
             f"{now}\tvalid\t\n"
             for i, w, v, d in zip(item_pk[crowd.items].tolist(), worker_pk[crowd.workers].tolist(),
                                   crowd.labels.tolist(), crowd.durations.tolist(), strict=True)),
        )  # fmt: skip
        conn.commit()
    print(f"  set-up by COPY (not the import path): {time.perf_counter() - started:.1f} s")


def vacuum(dsn: str) -> None:
    """Set-up before each run: VACUUM (ANALYZE) the tables aggregation uses, then CHECKPOINT.

    Stands in for autovacuum, which would clean up after each run in production; without it,
    every run leaves 200,000 dead row versions behind that the next one has to step over. The
    checkpoint keeps the set-up's writes out of the timed run.
    """
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        for table in VACUUMED:
            conn.execute(f"VACUUM (ANALYZE) {table}")
        conn.execute("CHECKPOINT")
    seconds = time.perf_counter() - started
    print(f"    (set-up: VACUUM (ANALYZE) {', '.join(VACUUMED)}; CHECKPOINT: {seconds:.1f} s)")


def time_aggregate(
    env: dict[str, str], slug: str, runs: int, as_json: bool, dsn: str | None
) -> list[float]:
    """Seconds of each run of `manage.py aggregate SLUG` (with --json to /dev/null)."""
    command = [PYTHON, "manage.py", "aggregate", slug, *(["--json"] if as_json else [])]
    shown = " ".join(command[1:]) + (" > /dev/null" if as_json else "")
    print(f"  $ {shown}")
    times = []
    for _ in range(runs):
        if dsn:
            vacuum(dsn)
        with tempfile.TemporaryFile("w+") as out:
            target: IO[str] | int = subprocess.DEVNULL if as_json else out
            seconds, peak, stderr = run(command, env, target)
            out.seek(0)
            summary = " | ".join(out.read().strip().splitlines())
        times.append(seconds)
        timings = [
            line.split("quorum.consensus: ", 1)[1]
            for line in stderr.splitlines()
            if "quorum.consensus: " in line
        ]
        figures = f"{seconds:.2f} s, peak RSS {peak / 2**20:.0f} MiB, load {os.getloadavg()[0]:.2f}"
        print(f"    {figures}  {summary}".rstrip())
        for line in timings:
            print(f"      {line}")
    print(f"    median of {runs}: {statistics.median(times):.2f} s")
    return times


def stored_answers(dsn: str, slug: str, crowd: Crowd) -> tuple[np.ndarray, dict[str, int]]:
    """The stored consensus class per item code (-1 if none), and the item states."""
    answers = np.full(crowd.truth.size, -1, np.int64)
    codes = {label: k for k, label in enumerate(LABELS)}
    with psycopg.connect(dsn) as conn, conn.cursor() as cursor:
        cursor.execute(
            "SELECT i.external_id, c.label FROM labelling_consensus c JOIN labelling_item i "
            "ON i.id = c.item_id JOIN labelling_project p ON p.id = i.project_id "
            "WHERE p.slug = %s",
            [slug],
        )
        for external, label in cursor:
            answers[int(external[2:])] = codes[label]
        cursor.execute(
            "SELECT i.state, count(*) FROM labelling_item i JOIN labelling_project p "
            "ON p.id = i.project_id WHERE p.slug = %s GROUP BY i.state ORDER BY 1",
            [slug],
        )
        states = {state: n for state, n in cursor.fetchall()}
    return answers, states


def report_accuracy(dsn: str, slug: str, crowd: Crowd) -> None:
    """The stored consensus against the simulated truth, next to majority vote."""
    answers, states = stored_answers(dsn, slug, crowd)
    voted, _ = majority_vote(crowd.items, crowd.labels, crowd.truth.size, len(LABELS))
    print(f"accuracy against the simulated truth ({crowd.truth.size:,} items):")
    print(f"  stored consensus (aggregate) {np.mean(answers == crowd.truth):.4f}")
    print(f"  majority vote                {np.mean(voted == crowd.truth):.4f}")
    print(f"  item states after aggregate: {states}")


def time_fit(crowd: Crowd) -> None:
    """The Dawid-Skene fit alone on the same labels, in this process (median of 3)."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fit = dawid_skene(crowd.items, crowd.workers, crowd.labels, *crowd.sizes)
        times.append(time.perf_counter() - start)
    print(
        f"dawid_skene alone on the same arrays: median of 3 {statistics.median(times):.3f} s "
        f"({fit.n_iter} EM iterations), accuracy {np.mean(fit.labels == crowd.truth):.4f}"
    )


def versions(dsn: str) -> str:
    """Machine and software versions."""
    import django

    with psycopg.connect(dsn) as conn:
        server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        autovacuum = conn.execute("SHOW autovacuum").fetchone()[0]  # type: ignore[index]
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = models[0] if models else platform.processor()
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {memory:.0f} GiB, {platform.machine()}; Python "
        f"{platform.python_version()}, numpy {np.__version__}, Django {django.__version__}, "
        f"psycopg {psycopg.__version__}, PostgreSQL {server} (autovacuum {autovacuum}); "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--per-item", type=int, default=5)
    parser.add_argument("--labellers", type=int, default=2_000)
    parser.add_argument("--random-labellers", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--load", choices=("import", "copy"), default="import")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--no-vacuum", dest="vacuum", action="store_false",
        help="skip the VACUUM before each run (this server runs with autovacuum off)",
    )  # fmt: skip
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL", "")
    if not dsn.startswith("postgres"):
        raise SystemExit(
            "set DATABASE_URL to a PostgreSQL database (the benchmark is for PostgreSQL)"
        )
    env = {**os.environ, "DEBUG": "1", "PYTHONPATH": str(ROOT), "LOG_LEVEL": "DEBUG"}
    print(versions(dsn))
    manage(env, "migrate", "-v0")
    crowd = simulate(args.items, args.per_item, args.labellers, args.random_labellers, args.seed)
    slug = f"agg-bench-{int(time.time())}"
    print(
        f"{crowd.items.size:,} labels: {crowd.truth.size:,} items x {args.per_item}, "
        f"{args.labellers:,} labellers ({args.random_labellers} random), {len(LABELS)} classes; "
        f"project {slug}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        create_project(env, slug, workdir)
        if args.load == "import":
            data = workdir / "labels.jsonl"
            write_labels(data, crowd)
            print(f"  {data.stat().st_size / 1e6:.0f} MB of JSON Lines")
            load_with_import(env, slug, data)
        else:
            load_with_copy(dsn, slug, crowd)
    cleaner = dsn if args.vacuum else None
    summary = time_aggregate(env, slug, args.runs, as_json=False, dsn=cleaner)
    as_json = time_aggregate(env, slug, args.runs, as_json=True, dsn=cleaner)
    print(
        f"aggregate over {crowd.items.size:,} labels on PostgreSQL: median "
        f"{statistics.median(summary):.2f} s, with --json {statistics.median(as_json):.2f} s"
    )
    report_accuracy(dsn, slug, crowd)
    time_fit(crowd)


if __name__ == "__main__":
    main()
