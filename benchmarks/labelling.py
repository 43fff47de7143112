"""Labelling benchmark: real HTTP against gunicorn on PostgreSQL: latency, throughput, invariants.

    .venv/bin/python benchmarks/labelling.py [--workers 3 --threads 4] [--runs 3]

DATABASE_URL (default postgres://postgres@127.0.0.1:5432/quorum_bench) names the database; each
run migrates a fresh schema in it (`labelling_bench_<time>`, dropped at the end unless --keep),
so the tables hold nothing but this run's rows. It builds the projects through the real commands
(`create_project`, `import_predictions`, `queue` with every item queued), creates labellers with
API tokens, starts gunicorn on 127.0.0.1 and then measures, over keep-alive `http.client`
connections (one a labeller, in threads of a few client processes):

  (a) one labeller alone: 500 cycles, p50 and p99 (a new labeller each run);
  (b) 32 labellers at once for 20 s: labels stored per second;
  (c) 64 labellers finishing 2,000 items at overlap 5 (min = max = 5), then the invariants in
      the database: every item has exactly 5 valid labels, no (item, labeller) pair repeats,
      every 201 answer is stored and nothing else is. PASS/FAIL each; exit status 1 on a FAIL.

A cycle is one item labelled, in either of two protocols (--protocol; by default both, run by
run in turn): "separate", `GET tasks/next` then `POST leases/{id}/label`; "chained", as the
labelling page does, `POST leases/{id}/label` with `"next": true`, whose response brings the next
item (`tasks/next` only when no item is in hand). (c) uses the last protocol given.

The throttle is raised (QUORUM_LABEL_RATE) so that it measures the server, not the limit; it
still runs, against Redis as in production (--redis-url, "" for the in-process cache).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import importlib.metadata
import importlib.util
import json
import multiprocessing
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

HERE = Path(__file__).resolve().parent
# This folder's queue.py would hide the standard library's `queue` (which multiprocessing needs)
# from the client processes: take the folder off the path and load ingest.py by its path.
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)
_spec = importlib.util.spec_from_file_location("ingest", HERE / "ingest.py")
assert _spec is not None and _spec.loader is not None
ingest = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ingest)
ROOT, PYTHON, manage, write_predictions = (
    ingest.ROOT,
    ingest.PYTHON,
    ingest.manage,
    ingest.write_predictions,
)

DEFAULT_DSN = "postgres://postgres@127.0.0.1:5432/quorum_bench"
POLICY = {"rules": [{"rule": "random", "fraction": 1}], "budget": None}
LABELS = ["match", "no_match"]
GUNICORN = str(Path(PYTHON).parent / "gunicorn")
# A 204 is taken as "nothing left" once it repeats this many times, this far apart.
NOTHING_LEFT_CONFIRMATIONS, NOTHING_LEFT_PAUSE = 3, 0.05


# ---------------------------------------------------------------- the client (runs in children)


@dataclass
class Tally:
    """What one client process saw."""

    statuses: Counter[str] = field(default_factory=Counter)
    cycles_ms: list[float] = field(default_factory=list)
    # lease id → label id of every submission answered 201 (a retried POST counts once).
    answered: dict[int, int] = field(default_factory=dict)
    retries: int = 0
    early_204: int = 0
    errors: list[str] = field(default_factory=list)

    def merge(self, other: Tally) -> None:
        self.statuses.update(other.statuses)
        self.cycles_ms.extend(other.cycles_ms)
        self.answered.update(other.answered)
        self.retries += other.retries
        self.early_204 += other.early_204
        self.errors.extend(other.errors[: 20 - len(self.errors)])


class Labeller:
    """One labeller's keep-alive connection and the calls of a labelling cycle: `tasks/next`
    then the answer ("separate"), or, as the labelling page does ("chained"), the answer asking
    for the next item (`"next": true`), with `tasks/next` only when no item is in hand."""

    def __init__(
        self, port: int, slug: str, token: str, tally: Tally, lock: threading.Lock, chained: bool
    ):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.next_path = f"/api/v1/projects/{slug}/tasks/next"
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.tally, self.lock = tally, lock
        self.chained = chained
        self.held: dict[str, Any] | None = None  # the next task an answer brought

    def call(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        # Both calls are safe to repeat (next returns the open lease, a repeated answer the
        # first one), so a connection the server closed between requests is simply reopened.
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=body, headers=self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError) as exc:
                self.conn.close()
                with self.lock:
                    self.tally.retries += 1
                if attempt == 2:
                    raise RuntimeError(f"{method} {path}: {exc!r}") from exc
        raise AssertionError("unreachable")

    def next_task(self) -> tuple[int, dict[str, Any] | None]:
        status, body = self.call("GET", self.next_path)
        self.count(f"next {status}", body if status >= 300 and status != 204 else b"")
        return status, json.loads(body) if status == 200 else None

    def answer(self, lease: int, value: str) -> bool:
        fields: dict[str, Any] = {"label": value, "duration_ms": 1200}
        if self.chained:
            fields["next"] = True
        payload = json.dumps(fields).encode()
        status, body = self.call("POST", f"/api/v1/leases/{lease}/label", payload)
        self.count(f"label {status}", body if status != 201 else b"")
        if status == 201:
            answered = json.loads(body)
            with self.lock:
                self.tally.answered[lease] = answered["id"]
            if self.chained:
                self.held = answered["next"]
                if "next_error" in answered:
                    self.count("next error", json.dumps(answered["next_error"]).encode())
        return status == 201

    def count(self, key: str, body: bytes) -> None:
        with self.lock:
            self.tally.statuses[key] += 1
            if body and len(self.tally.errors) < 20:
                self.tally.errors.append(f"{key}: {body[:300]!r}")

    def cycle(self, value: str) -> str:
        """One next + answer (or one chained answer); returns "done" (a 204), "labelled" or
        "failed"."""
        started = time.perf_counter()
        task, self.held = self.held, None
        if task is None:
            status, task = self.next_task()
            if task is None:
                return "done" if status == 204 else "failed"
        if not self.answer(task["lease"], value):
            return "failed"
        with self.lock:
            self.tally.cycles_ms.append((time.perf_counter() - started) * 1000)
        return "labelled"


def label_for(labeller: Labeller, until: float, stop_when_done: bool) -> None:
    """Label until the deadline, or (stop_when_done) until 204 says nothing is left, confirmed."""
    k, nothing, failures = 0, 0, 0
    while time.monotonic() < until and failures < 50:
        k += 1
        try:
            outcome = labeller.cycle(LABELS[k % 2])
        except RuntimeError as exc:  # no answer even after reconnecting
            labeller.count("no response", str(exc).encode())
            outcome = "failed"
        if outcome == "done":
            nothing += 1
            if stop_when_done and nothing >= NOTHING_LEFT_CONFIRMATIONS:
                return
            time.sleep(NOTHING_LEFT_PAUSE)
            continue
        if outcome == "labelled" and nothing:
            # "Nothing left for you" was said while something was: count it.
            with labeller.lock:
                labeller.tally.early_204 += nothing
        nothing = 0
        failures += outcome == "failed"


def client_process(
    port: int,
    slug: str,
    tokens: list[str],
    seconds: float,
    stop_when_done: bool,
    start_at: float,
    chained: bool,
) -> Tally:
    """One client process: a thread per labeller, all starting at start_at (time.time())."""
    tally, lock = Tally(), threading.Lock()
    labellers = [Labeller(port, slug, token, tally, lock, chained) for token in tokens]
    time.sleep(max(0.0, start_at - time.time()))
    until = time.monotonic() + seconds
    threads = [
        threading.Thread(target=label_for, args=(lab, until, stop_when_done)) for lab in labellers
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for labeller in labellers:
        labeller.conn.close()
    return tally


def crowd_run(
    port: int,
    slug: str,
    tokens: list[str],
    processes: int,
    seconds: float,
    stop_when_done: bool,
    chained: bool,
) -> tuple[Tally, float]:
    """All tokens' labellers at once, spread over client processes; the tally and wall time."""
    chunks = [tokens[i::processes] for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    tally = Tally()
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context) as pool:
        start_at = time.time() + 1.5  # past the children's start-up
        futures = [
            pool.submit(
                client_process, port, slug, chunk, seconds, stop_when_done, start_at, chained
            )
            for chunk in chunks
        ]
        for future in futures:
            tally.merge(future.result())
    return tally, time.time() - start_at


# ---------------------------------------------------------------- set-up and the server


def sh(command: str) -> str:
    result = subprocess.run(command, shell=True, capture_output=True, text=True, check=False)
    return result.stdout.strip()


def version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


def psql(dsn: str, sql: str) -> str:
    result = subprocess.run(
        ["psql", dsn, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def with_schema(dsn: str, schema: str) -> str:
    """The DATABASE_URL whose connections use this schema (PostgreSQL's search_path)."""
    parts = urlsplit(dsn)
    option = quote(f"-c search_path={schema}", safe="")
    query = f"{parts.query}&options={option}" if parts.query else f"options={option}"
    return urlunsplit(parts._replace(query=query))


def project(env: dict[str, str], workdir: Path, slug: str, items: int, overlap: int) -> None:
    """A project whose items are all queued, wanting exactly `overlap` labels each."""
    spec, data, policy = (workdir / f"{slug}.{ext}" for ext in ("json", "jsonl", "policy.json"))
    spec.write_text(
        json.dumps(
            {
                "slug": slug,
                "labels": LABELS,
                "overlap": {"min": overlap, "max": overlap, "target_confidence": 0.95},
                "gold_rate": 0,
            }
        )
    )
    policy.write_text(json.dumps(POLICY))
    write_predictions(data, items)
    manage(env, "create_project", "--spec", str(spec))
    manage(env, "import_predictions", slug, str(data))
    manage(env, "queue", slug, "--policy", str(policy))


def labellers(env: dict[str, str], slug: str, prefix: str, n: int) -> list[str]:
    """API tokens of n new crowd labellers of the project (one process, not n commands)."""
    code = (
        "import json; from labelling.models import Project; "
        "from labelling.services.labellers import labeller_create; "
        f"p = Project.objects.get(slug={slug!r}); "
        "print(json.dumps([labeller_create(project=p, username=f'"
        + prefix
        + f"{{k}}', role='crowd')[1] for k in range({n})]))"
    )
    _, out = manage(env, "shell", "-c", code)
    return list(json.loads(out.strip().splitlines()[-1]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_serving(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"gunicorn exited with {server.returncode}:\n{log.read_text()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            conn.request("GET", "/api/v1/jobs/0")  # 401 without a token: no side effect
            if conn.getresponse().status == 401:
                return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.1)
    raise SystemExit(f"gunicorn did not answer within 30 s:\n{log.read_text()}")


def stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


class RedisDb:
    """The Redis database the server uses for its cache (throttle) and as Celery broker.

    Nothing consumes the consensus jobs the answers enqueue (a worker would run elsewhere in
    production); the database is emptied afterwards if it was empty before, else left alone."""

    def __init__(self, url: str) -> None:
        import redis

        self.client = redis.Redis.from_url(url) if url else None
        self.was_empty = self.client is not None and self.client.dbsize() == 0
        if self.client is not None and not self.was_empty:
            print(f"note: {url} is not empty; it will not be cleared afterwards")

    def clear(self) -> None:
        if self.client is not None and self.was_empty:
            self.client.flushdb()


# ---------------------------------------------------------------- the measurements


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))] if values else 0.0


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def analyze(dsn: str) -> None:
    """What autovacuum does in production (it is off on some machines): the dead rows of the
    previous run cleared and fresh statistics of this schema's tables."""
    tables = psql(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    psql(dsn, "VACUUM ANALYZE " + ", ".join(tables.split()))


def one_labeller(port: int, slug: str, token: str, cycles: int, chained: bool) -> Tally:
    """`cycles` next + answer cycles (or chained answers) of one labeller on one keep-alive
    connection, after 20 warm-up cycles."""
    tally = Tally()
    labeller = Labeller(port, slug, token, tally, threading.Lock(), chained)
    for _ in range(20):
        labeller.cycle(LABELS[0])
    tally.cycles_ms.clear()
    for k in range(cycles):
        if labeller.cycle(LABELS[k % 2]) != "labelled":
            raise SystemExit(f"cycle {k} failed: {tally.statuses} {tally.errors[:3]}")
    labeller.conn.close()
    return tally


def check(name: str, ok: bool, detail: str) -> bool:
    print(f"  {'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return ok


def stored_labels(dsn: str, pid: str) -> tuple[set[int], str]:
    """The ids of the project's stored labels, and how many (item, labeller) pairs hold more
    than one valid label."""
    stored = {
        int(x)
        for x in psql(dsn, f"SELECT id FROM labelling_label WHERE project_id = {pid}").split()
    }
    repeats = psql(
        dsn,
        "SELECT count(*) FROM (SELECT 1 FROM labelling_label WHERE state = 'valid' AND "
        f"project_id = {pid} GROUP BY item_id, labeller_id HAVING count(*) > 1) t",
    )
    return stored, repeats


def invariants(dsn: str, slug: str, overlap: int, items: int, tally: Tally) -> bool:
    """The database after the crowd run: exact overlap, no repeats, every 201 stored."""
    pid = psql(dsn, f"SELECT id FROM labelling_project WHERE slug = '{slug}'")
    per_item = psql(
        dsn,
        "SELECT n, count(*) FROM (SELECT q.item_id, (SELECT count(*) FROM labelling_label l "
        "WHERE l.item_id = q.item_id AND l.state = 'valid') n FROM labelling_queueentry q "
        f"WHERE q.project_id = {pid}) t GROUP BY n ORDER BY n",
    )
    histogram = dict(line.split("|") for line in per_item.splitlines())
    stored, repeats = stored_labels(dsn, pid)
    answered = set(tally.answered.values())
    books = psql(
        dsn,
        "SELECT count(*) FILTER (WHERE labels_count <> needed OR needed <> "
        f"{overlap} OR open_leases <> 0 OR collecting), count(*) FILTER (WHERE "
        f"labels_count > needed) FROM labelling_queueentry WHERE project_id = {pid}",
    ).split("|")
    server_errors = sum(
        n for key, n in tally.statuses.items() if key.split()[1][0] == "5" or key == "no response"
    )
    results = [
        check(
            f"every item has exactly {overlap} valid labels",
            histogram == {str(overlap): str(items)},
            f"items by number of valid labels: {histogram}",
        ),
        check("no (item, labeller) pair repeats", repeats == "0", f"{repeats} pairs repeat"),
        check(
            "labels stored = submissions answered 201 (none lost, none extra)",
            stored == answered and len(tally.answered) == len(answered),
            f"{len(stored)} stored, {len(tally.answered)} leases answered 201, "
            f"{len(answered - stored)} answered but not stored, "
            f"{len(stored - answered)} stored but never answered 201",
        ),
        check(
            "queue bookkeeping: labels_count = needed, no open leases, not collecting",
            books == ["0", "0"],
            f"{books[0]} entries off, {books[1]} with labels_count > needed",
        ),
        check(
            "no server errors (5xx) or requests left unanswered",
            server_errors == 0,
            f"{server_errors} such requests",
        ),
    ]
    return all(results)


def describe(tally: Tally) -> str:
    codes = ", ".join(f"{k}: {n}" for k, n in sorted(tally.statuses.items()))
    if tally.retries:
        codes += f"; {tally.retries} reconnects"
    if tally.early_204:
        codes += f"; {tally.early_204} early 204s (nothing left, then something)"
    return codes


def first_errors(tally: Tally) -> None:
    for error in tally.errors[:3]:
        print(f"    e.g. {error}")


PROTOCOLS = {
    "separate": "GET tasks/next, then POST the answer",
    "chained": 'POST the answer with "next": true, which brings the next item (the labelling '
    "page's way)",
}


def measure_alone(args: argparse.Namespace, port: int, dsn: str, tokens: list[str]) -> None:
    print(
        f"\n(a) one labeller (a new one each run), {args.cycles} cycles on one keep-alive "
        "connection (after 20 warm-up cycles), project 'load' (overlap 3); the protocols "
        "alternate run by run"
    )
    p50s: dict[str, list[float]] = {protocol: [] for protocol in args.protocol}
    p99s: dict[str, list[float]] = {protocol: [] for protocol in args.protocol}
    fresh = iter(tokens)
    for run in range(args.runs):
        for protocol in args.protocol:
            analyze(dsn)
            tally = one_labeller(port, "load", next(fresh), args.cycles, protocol == "chained")
            cycles = tally.cycles_ms
            p50s[protocol].append(percentile(cycles, 50))
            p99s[protocol].append(percentile(cycles, 99))
            print(
                f"  run {run + 1}, {protocol}: p50 {p50s[protocol][-1]:.1f} ms, p99 "
                f"{p99s[protocol][-1]:.1f} ms, max {max(cycles):.1f} ms; median of the first 100 "
                f"{statistics.median(cycles[:100]):.1f} ms, of the last 100 "
                f"{statistics.median(cycles[-100:]):.1f} ms  ({load()})"
            )
    for protocol in args.protocol:
        print(
            f"  median of {args.runs} runs, {protocol} ({PROTOCOLS[protocol]}): p50 "
            f"{statistics.median(p50s[protocol]):.1f} ms (target < 10), "
            f"p99 {statistics.median(p99s[protocol]):.1f} ms (target < 40)"
        )


def measure_crowd(args: argparse.Namespace, port: int, dsn: str, tokens: list[str]) -> None:
    print(
        f"\n(b) {len(tokens)} labellers at once for {args.seconds:.0f} s, project 'load' "
        f"({args.client_processes} client processes × {len(tokens) // args.client_processes} "
        "threads, a keep-alive connection each, no think time); the protocols alternate"
    )
    rates: dict[str, list[float]] = {protocol: [] for protocol in args.protocol}
    for run in range(args.runs):
        for protocol in args.protocol:
            analyze(dsn)
            tally, seconds = crowd_run(
                port,
                "load",
                tokens,
                args.client_processes,
                args.seconds,
                stop_when_done=False,
                chained=protocol == "chained",
            )
            rates[protocol].append(len(tally.answered) / seconds)
            print(
                f"  run {run + 1}, {protocol}: {len(tally.answered):,} labels in {seconds:.1f} s "
                f"= {rates[protocol][-1]:,.0f} labels/s; cycle p50 "
                f"{percentile(tally.cycles_ms, 50):.1f} ms, p99 "
                f"{percentile(tally.cycles_ms, 99):.1f} ms  ({describe(tally)}; {load()})"
            )
            first_errors(tally)
    for protocol in args.protocol:
        print(
            f"  median of {args.runs} runs, {protocol} ({PROTOCOLS[protocol]}): "
            f"{statistics.median(rates[protocol]):,.0f} labels/s (target ≥ 300)"
        )


def measure_invariants(args: argparse.Namespace, port: int, dsn: str, tokens: list[str]) -> bool:
    protocol = args.protocol[-1]
    print(
        f"\n(c) {len(tokens)} labellers finish {args.invariant_items:,} items at overlap "
        f"{args.overlap} (min = max), project 'exact', protocol {protocol}; a labeller stops "
        f"after {NOTHING_LEFT_CONFIRMATIONS} 204s {NOTHING_LEFT_PAUSE * 1000:.0f} ms apart"
    )
    analyze(dsn)
    tally, seconds = crowd_run(
        port,
        "exact",
        tokens,
        args.client_processes,
        args.invariant_seconds,
        stop_when_done=True,
        chained=protocol == "chained",
    )
    print(
        f"  {len(tally.answered):,} labels in {seconds:.1f} s = "
        f"{len(tally.answered) / seconds:,.0f} labels/s  ({describe(tally)}; {load()})"
    )
    first_errors(tally)
    return invariants(dsn, "exact", args.overlap, args.invariant_items, tally)


# ---------------------------------------------------------------- main


def environment(args: argparse.Namespace, dsn: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "DATABASE_URL": dsn,
        "DEBUG": "0",
        "SECRET_KEY": "labelling-benchmark-only",
        "ALLOWED_HOSTS": "127.0.0.1",
        # Plain HTTP on loopback: no redirect to HTTPS.
        "SECURE_SSL_REDIRECT": "0",
        "REDIS_URL": args.redis_url,
        "QUORUM_LABEL_RATE": "100000/second",
        "QUORUM_NEW_LABELLER_GOLD": "0",
        "LOG_LEVEL": "WARNING",
    }


def print_machine(args: argparse.Namespace, gunicorn: list[str], base_dsn: str) -> None:
    cpu = sh("lscpu | sed -n 's/^Model name: *//p'")
    memory = sh("free -g | awk '/^Mem:/ {print $2}'")
    print(f"machine: {sh('nproc')} cores ({cpu}), {memory} GiB, {platform.platform()}; {load()}")
    print(
        f"versions: Python {platform.python_version()}, Django {version('django')}, "
        f"DRF {version('djangorestframework')}, psycopg {version('psycopg')}, "
        f"gunicorn {version('gunicorn')}, PostgreSQL {psql(base_dsn, 'SHOW server_version')} "
        f"(autovacuum {psql(base_dsn, 'SHOW autovacuum')}: the benchmark runs VACUUM ANALYZE "
        "itself before each run)"
    )
    print(f"code: {ROOT}")
    print(f"command: {' '.join(shlex.quote(a) for a in [PYTHON, *sys.argv])}")
    print(f"server: {' '.join(gunicorn)}")
    print(
        f"server settings: DEBUG=0, QUORUM_LABEL_RATE=100000/second, QUORUM_NEW_LABELLER_GOLD=0, "
        f"REDIS_URL={args.redis_url or '(unset: in-process cache, jobs in-process)'}"
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4, help="threads a gthread worker")
    parser.add_argument("--worker-class", default="gthread")
    parser.add_argument("--runs", type=int, default=3, help="repeats of (a) and (b)")
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--crowd", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--invariant-labellers", type=int, default=64)
    parser.add_argument("--invariant-items", type=int, default=2000)
    parser.add_argument("--invariant-seconds", type=float, default=240, help="time limit of (c)")
    parser.add_argument("--overlap", type=int, default=5)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--only", choices=["a", "b", "c"], action="append")
    parser.add_argument(
        "--protocol",
        choices=list(PROTOCOLS),
        action="append",
        help="how a labeller asks for work (repeatable; default both, alternating); (c) uses "
        "the last one given",
    )
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    args = parser.parse_args()
    args.protocol = args.protocol or list(PROTOCOLS)
    return args


def set_up(args: argparse.Namespace, env: dict[str, str], workdir: Path) -> dict[str, Any]:
    """Migrate the fresh schema; the two projects; the labellers' tokens."""
    started = time.perf_counter()
    manage(env, "migrate", "-v0")
    load_items = max(4000, args.runs * len(args.protocol) * int(args.seconds) * 600 // 3)
    project(env, workdir, "load", load_items, 3)
    project(env, workdir, "exact", args.invariant_items, args.overlap)
    tokens = {
        # A labeller of their own for each run, so that the runs repeat the same scenario.
        "alone": labellers(env, "load", "alone", args.runs * len(args.protocol)),
        "crowd": labellers(env, "load", "crowd", args.crowd),
        "exact": labellers(env, "exact", "exact", args.invariant_labellers),
    }
    print(
        f"set-up in {time.perf_counter() - started:.0f} s: project 'load' {load_items:,} items "
        f"at overlap 3, project 'exact' {args.invariant_items:,} items at overlap {args.overlap}"
    )
    return tokens


def stop_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # runs the clean-up in main's `finally`


def main() -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    args = arguments()
    base_dsn = os.environ.get("DATABASE_URL", DEFAULT_DSN)
    if not base_dsn.startswith("postgres"):
        raise SystemExit("DATABASE_URL must name a PostgreSQL database")
    schema = f"labelling_bench_{int(time.time())}"
    dsn = with_schema(base_dsn, schema)
    env = environment(args, dsn)
    port = free_port()
    gunicorn = [GUNICORN, "core.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers)]
    gunicorn += ["--worker-class", args.worker_class, "--threads", str(args.threads)]
    print_machine(args, gunicorn, base_dsn)
    print(f"schema: {schema} in {base_dsn}")
    only = set(args.only or "abc")
    redis_db = RedisDb(args.redis_url)
    psql(base_dsn, f"CREATE SCHEMA {schema}")
    ok = False
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "gunicorn.log"
        server: subprocess.Popen[bytes] | None = None
        try:
            tokens = set_up(args, env, Path(tmp))
            with log.open("wb") as out:
                server = subprocess.Popen(
                    gunicorn, cwd=ROOT, env=env, stdout=out, stderr=out, start_new_session=True
                )
            wait_until_serving(port, server, log)
            if "a" in only:
                measure_alone(args, port, dsn, tokens["alone"])
            if "b" in only:
                measure_crowd(args, port, dsn, tokens["crowd"])
            ok = "c" not in only or measure_invariants(args, port, dsn, tokens["exact"])
        finally:
            if server is not None:
                stop(server)
                errors = [line for line in log.read_text().splitlines() if "Error" in line]
                if errors:
                    print(f"gunicorn log: {len(errors)} lines name an error; e.g. {errors[:2]}")
            if not args.keep:
                psql(base_dsn, f"DROP SCHEMA {schema} CASCADE")
            redis_db.clear()
    print(f"\n{'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
