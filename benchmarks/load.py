"""Load: a crowd and an engineer at once against gunicorn and a Celery worker, on PostgreSQL and
Redis, for a bounded time; then what must hold.

    .venv/bin/python benchmarks/load.py [--seconds 300] [--crowd 32]

DATABASE_URL (default postgres://postgres@127.0.0.1:5432/quorum_bench) names the database; the run
migrates a fresh schema in it (dropped at the end unless --keep) and uses its own Redis database
(--redis-url) as cache and Celery broker. It builds a project through the real commands, starts
gunicorn (3 gthread workers × 4 threads) and one Celery worker, then for --seconds:

- --crowd labellers, each a thread with a keep-alive connection, lease and answer with no think
  time, each answer bringing the next item as the labelling page's do (most answers agree with a
  hidden truth, a tenth do not, so that items get approved, escalated and recomputed);
- an engineer, every --engineer-every seconds from one such period in (the crowd has settled
  items by then), imports 1,000 new predictions, queues them, asks for a release (a background
  job on the worker), waits for it, downloads it and checks its sha256;
- every 5 s, the resident memory of each gunicorn worker and of the Celery worker.

Then it checks (PASS/FAIL each; exit status 1 on a FAIL): no server errors or unanswered requests;
every answer acknowledged with 201 is stored, and nothing else; no (item, labeller) pair twice; no
item over its overlap; every engineer step succeeded and every release downloads with its
sha256; consensus caught up with the last label once the worker's queue drained; memory flat:
no process grew by more than --memory-slack MiB between the end of the first fifth of the run and
its end.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)  # this folder's queue.py would hide the standard library's
_spec = importlib.util.spec_from_file_location("labelling_bench", HERE / "labelling.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["labelling_bench"] = bench
_spec.loader.exec_module(bench)

CELERY = str(Path(bench.PYTHON).parent / "celery")
SLUG = "load"


# ---------------------------------------------------------------- the crowd


def truth(external_id: str) -> str:
    """The hidden right answer of an item: a fixed function of its id."""
    return bench.LABELS[zlib.crc32(external_id.encode()) % 3 == 0]


def crowd_member(labeller: Any, until: float, seed: int) -> None:
    """Lease and answer until the deadline, as the labelling page does (each answer brings the
    next item): nine answers in ten right, one wrong."""
    rng = random.Random(seed)
    while time.monotonic() < until:
        try:
            task, labeller.held = labeller.held, None
            if task is None:
                status, task = labeller.next_task()
            if task is None:
                time.sleep(0.5 if status == 204 else 0.2)  # nothing left for now, or an error
                continue
            right = truth(task["item"]["external_id"])
            wrong = bench.LABELS[1 - bench.LABELS.index(right)]
            labeller.answer(task["lease"], right if rng.random() < 0.9 else wrong)
        except RuntimeError as exc:  # no answer even after reconnecting
            labeller.count("no response", str(exc).encode())
            time.sleep(0.2)


# ---------------------------------------------------------------- the engineer


@dataclass
class Engineer:
    """An engineer's API calls during the run, and what came of them."""

    port: int
    token: str
    steps: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    seconds: dict[str, list[float]] = field(default_factory=dict)
    releases: int = 0

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, bytes, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json"}
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(), response
        finally:
            conn.close()

    def step(self, name: str, method: str, path: str, body: Any, ok: set[int]) -> Any:
        started = time.perf_counter()
        status, content, _ = self.call(method, path, body)
        self.seconds.setdefault(name, []).append(time.perf_counter() - started)
        self.steps[f"{name} {status}"] += 1
        if status not in ok:
            self.failures.append(f"{name}: {status} {content[:300]!r}")
            return None
        return json.loads(content) if content else {}

    def round(self, number: int, rng: random.Random) -> None:
        """Import 1,000 new predictions, queue them, release, wait, download, check."""
        rows = [
            {
                "external_id": f"e{number:03d}-{k:04d}",
                "payload": {"pet": f"pet {number} {k}", "price": rng.randint(5, 200)},
                "model_version": "m1",
                "probabilities": {"match": (p := round(rng.random(), 4)), "no_match": 1 - p},
            }
            for k in range(1000)
        ]
        if self.step("import", "POST", f"/api/v1/projects/{SLUG}/predictions", rows, {201}) is None:
            return
        if self.step("queue", "POST", f"/api/v1/projects/{SLUG}/queue", {}, {200}) is None:
            return
        job = self.step(
            "release",
            "POST",
            f"/api/v1/projects/{SLUG}/releases",
            {"format": "jsonl", "override_reason": "load run: every release is wanted"},
            {202},
        )
        if job is not None:
            self.release_finished(job["id"])

    def release_finished(self, job_id: int) -> None:
        """Wait for the release job, then download the file and check its sha256."""
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            job = self.step("job", "GET", f"/api/v1/jobs/{job_id}", None, {200})
            if job is None or job["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.5)
        if job is None or job["status"] != "succeeded":
            self.failures.append(f"release job {job_id}: {job and job['status']} {job}")
            return
        release_id = job["result"]["release"]
        status, content, response = self.call("GET", f"/api/v1/releases/{release_id}/download")
        sent = response.getheader("X-Content-SHA256")
        if status != 200 or hashlib.sha256(content).hexdigest() != sent:
            self.failures.append(f"release {release_id}: download {status}, sha256 mismatch")
            return
        self.releases += 1

    def run(self, until: float, every: float) -> None:
        # Not at once: a release asked for before the crowd has settled any item holds nothing
        # and fails ("nothing to release"), which is the engineer's timing, not the server's.
        time.sleep(min(every, max(0.0, until - time.monotonic())))
        rng, number = random.Random(11), 0
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                self.round(number, rng)
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                self.failures.append(f"round {number}: {exc!r}")
            number += 1
            time.sleep(max(0.0, every - (time.monotonic() - started)))


# ---------------------------------------------------------------- memory


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@dataclass
class Memory:
    """Resident memory of each web worker and the Celery worker's processes, over time."""

    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)

    def sample(self, web_master: int, worker: int) -> None:
        processes = {f"web worker {pid}": pid for pid in children(web_master)}
        processes[f"celery {worker}"] = worker
        processes |= {f"celery child {pid}": pid for pid in children(worker)}
        self.samples.append((time.monotonic(), {k: rss_mib(p) for k, p in processes.items()}))

    def watch(self, web_master: int, worker: int, until: float) -> None:
        while time.monotonic() < until:
            self.sample(web_master, worker)
            time.sleep(5)
        self.sample(web_master, worker)

    def growth(self) -> dict[str, tuple[float, float]]:
        """Each process's RSS at the end of the first fifth of the run, and at its end."""
        if len(self.samples) < 2:
            return {}
        start, end = self.samples[0][0], self.samples[-1][0]
        early = min(self.samples, key=lambda s: abs(s[0] - (start + (end - start) / 5)))[1]
        last = self.samples[-1][1]
        return {name: (early[name], last[name]) for name in last if name in early}


# ---------------------------------------------------------------- checks


def drained(redis_url: str, seconds: float) -> bool:
    """Wait until the worker's queue is empty and nothing new arrives for a few seconds."""
    import redis

    client = redis.Redis.from_url(redis_url)
    deadline, quiet_since = time.monotonic() + seconds, None
    while time.monotonic() < deadline:
        waiting = client.llen("celery") + len(client.keys("quorum*pending*"))
        if waiting == 0:
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 6:
                return True
        else:
            quiet_since = None
        time.sleep(0.5)
    return False


def checks(
    args: argparse.Namespace, dsn: str, tally: Any, engineer: Engineer, memory: Memory
) -> bool:
    psql = bench.psql
    pid = psql(dsn, f"SELECT id FROM labelling_project WHERE slug = '{SLUG}'")
    stored, repeats = bench.stored_labels(dsn, pid)
    answered = set(tally.answered.values())
    over = psql(dsn, "SELECT count(*) FROM labelling_queueentry WHERE labels_count > needed")
    caught_up = drained(args.redis_url, 120)
    recomputed = psql(
        dsn,
        f"SELECT (SELECT max(created_at) FROM labelling_label WHERE project_id = {pid}) <= "
        f"(SELECT max(c.computed_at) FROM labelling_consensus c JOIN labelling_item i "
        f"ON i.id = c.item_id WHERE i.project_id = {pid})",
    )
    server_errors = sum(
        n for key, n in tally.statuses.items() if key.split()[1][0] == "5" or key == "no response"
    )
    growth = memory.growth()
    grew = {k: v for k, v in growth.items() if v[1] - v[0] > args.memory_slack}
    biggest = max((v[1] - v[0] for v in growth.values()), default=0.0)
    return all(
        [
            bench.check("no server errors (5xx) or unanswered requests", server_errors == 0,
                        f"{server_errors} such requests; {bench.describe(tally)}"),
            bench.check("every 201 answer stored, nothing else", stored == answered,
                        f"{len(stored)} stored, {len(answered)} answered 201, "
                        f"{len(answered - stored)} lost, {len(stored - answered)} extra"),
            bench.check("no (item, labeller) pair twice", repeats == "0", f"{repeats} pairs"),
            bench.check("no item over its overlap", over == "0", f"{over} queue entries"),
            bench.check("every engineer step succeeded", not engineer.failures,
                        f"{dict(engineer.steps)}; {engineer.releases} releases downloaded and "
                        f"checked; failures: {engineer.failures[:3]}"),
            bench.check("consensus caught up after the worker's queue drained",
                        caught_up and recomputed == "t", f"queue drained: {caught_up}"),
            bench.check(f"memory flat (no process grew more than {args.memory_slack:.0f} MiB)",
                        not grew, f"largest growth {biggest:.1f} MiB; grew: {grew}"),
        ]
    )  # fmt: skip


# ---------------------------------------------------------------- main


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--crowd", type=int, default=32)
    parser.add_argument("--items", type=int, default=20000, help="queued before the run")
    parser.add_argument("--engineer-every", type=float, default=15.0)
    parser.add_argument("--memory-slack", type=float, default=30.0, help="MiB")
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    return parser.parse_args()


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, cwd=bench.ROOT, env=env, stdout=out, stderr=out, start_new_session=True
        )


def run(args: argparse.Namespace, env: dict[str, str], dsn: str, workdir: Path) -> bool:
    bench.manage(env, "migrate", "-v0")
    bench.project(env, workdir, SLUG, args.items, 3)
    tokens = bench.labellers(env, SLUG, "crowd", args.crowd)
    _, out = bench.manage(env, "create_labeller", SLUG, "engineer", "--role", "engineer")
    engineer_token = out.strip().splitlines()[-1]
    port = bench.free_port()
    web_log, worker_log = workdir / "gunicorn.log", workdir / "worker.log"
    web = start(
        [bench.GUNICORN, "core.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers),
         "--worker-class", "gthread", "--threads", str(args.threads)],
        env, web_log,
    )  # fmt: skip
    worker = start(
        [CELERY, "-A", "core", "worker", "--concurrency=1", "-l", "warning",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        env, worker_log,
    )  # fmt: skip
    try:
        bench.wait_until_serving(port, web, web_log)
        return measure(args, port, dsn, tokens, engineer_token, web.pid, worker.pid)
    finally:
        bench.stop(web)
        bench.stop(worker)
        for log in (web_log, worker_log):
            errors = [line for line in log.read_text().splitlines() if "Error" in line]
            if errors:
                print(f"{log.name}: {len(errors)} lines name an error; e.g. {errors[:2]}")


def measure(
    args: argparse.Namespace, port: int, dsn: str, tokens: list[str], engineer_token: str,
    web_pid: int, worker_pid: int,
) -> bool:  # fmt: skip
    tally, lock = bench.Tally(), threading.Lock()
    crowd = [bench.Labeller(port, SLUG, token, tally, lock, chained=True) for token in tokens]
    engineer, memory = Engineer(port, engineer_token), Memory()
    until = time.monotonic() + args.seconds
    threads = [
        threading.Thread(target=crowd_member, args=(lab, until, k)) for k, lab in enumerate(crowd)
    ]
    threads.append(threading.Thread(target=engineer.run, args=(until, args.engineer_every)))
    threads.append(threading.Thread(target=memory.watch, args=(web_pid, worker_pid, until)))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    labels = len(tally.answered)
    rate = labels / elapsed
    print(f"\n{args.crowd} labellers and an engineer for {elapsed:.0f} s: {labels} labels ")
    print(f"  ({rate:.0f} a second), {engineer.releases} releases; {bench.load()}")
    for name, values in sorted(engineer.seconds.items()):
        median = statistics.median(values)
        print(f"  engineer {name}: {len(values)} calls, median {median:.2f} s")
    for name, (early, last) in sorted(memory.growth().items()):
        print(f"  {name}: {early:.0f} MiB after the first fifth, {last:.0f} MiB at the end")
    return checks(args, dsn, tally, engineer, memory)


def main() -> None:
    args = arguments()
    base_dsn = os.environ.get("DATABASE_URL", bench.DEFAULT_DSN)
    if not base_dsn.startswith("postgres"):
        raise SystemExit("DATABASE_URL must name a PostgreSQL database")
    schema = f"load_bench_{int(time.time())}"
    dsn = bench.with_schema(base_dsn, schema)
    redis_db = bench.RedisDb(args.redis_url)
    bench.psql(base_dsn, f"CREATE SCHEMA {schema}")
    ok = False
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **bench.environment(args, dsn),
            "EXPORT_STORAGE": f"file://{tmp}/exports",
            "QUORUM_CONSENSUS_DEBOUNCE_SECONDS": "2",
        }
        print(f"machine: {bench.sh('nproc')} cores, {bench.load()}; schema {schema}")
        try:
            ok = run(args, env, dsn, Path(tmp))
        finally:
            if not args.keep:
                bench.psql(base_dsn, f"DROP SCHEMA {schema} CASCADE")
            redis_db.clear()
    print(f"\n{'PASS' if ok else 'FAIL'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
