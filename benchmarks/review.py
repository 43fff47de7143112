"""Review benchmark: real HTTP against gunicorn on PostgreSQL, 100,000 items, 5,000 escalations.

    .venv/bin/python benchmarks/review.py [--items 100000 --escalations 5000] [--runs 3]

DATABASE_URL (default postgres://postgres@127.0.0.1:5432/quorum_bench) names the database; each
run migrates a fresh schema in it (`review_bench_<time>`, dropped at the end unless --keep). It
imports the items through the real commands (`create_project`, `import_predictions`, `queue`),
then writes in SQL what consensus would have left: for each escalated item three crowd labels
from 40 labellers with reliability figures, a consensus row and an open escalation with a random
priority (a third each low_confidence, gold_conflict, audit). Gunicorn serves on 127.0.0.1; one
expert, over a keep-alive `http.client` connection, measures per run:

  (a) `GET /review/{slug}/` (session cookie) --page-requests times: p50 and p95;
  (b) --cycles review cycles: `GET …/escalations/next` (leases the most urgent escalation nobody
      holds) then `POST /escalations/{id}/resolve`; p50 and p95 of each call;
  (c) `GET …/escalations?limit=50` (the API's queue page with the evidence) 50 times.

The targets are p95 under 100 ms for (a) and for the next call of (b).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)
_spec = importlib.util.spec_from_file_location("labelling_bench", HERE / "labelling.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["labelling_bench"] = bench  # its dataclasses look their module up
_spec.loader.exec_module(bench)

SLUG = "review"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--escalations", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--page-requests", type=int, default=300)
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    parser.add_argument("--keep", action="store_true", help="keep the schema afterwards")
    return parser.parse_args()


# What consensus leaves behind for escalated items, written in SQL (run in the bench schema).
ESCALATED_SQL = """
WITH picked AS (
  SELECT i.id FROM labelling_item i JOIN labelling_project p ON p.id = i.project_id
  WHERE p.slug = '{slug}' ORDER BY i.id LIMIT {n}
)
UPDATE labelling_item SET state = 'escalated' WHERE id IN (SELECT id FROM picked);
INSERT INTO labelling_labeller (project_id, platform, worker_id, role, status, n_labels, accuracy,
  gold_accuracy, gold_answers, agreement, flags, created_at, updated_at)
SELECT p.id, 'import', 'w' || k, 'crowd', 'active', 400, 0.6 + k / 100.0, 0.7, 20, 0.5,
  '[]'::jsonb, now(), now()
FROM labelling_project p, generate_series(1, 40) k WHERE p.slug = '{slug}';
INSERT INTO labelling_label (project_id, item_id, labeller_id, value, source, batch, duration_ms,
  created_at, state, void_reason)
SELECT i.project_id, i.id, l.id, CASE WHEN (i.id + l.id) % 2 = 0 THEN 'match' ELSE 'no_match' END,
  'import', 'bench', 2000, now(), 'valid', ''
FROM labelling_item i
JOIN LATERAL (SELECT id FROM labelling_labeller WHERE project_id = i.project_id
  AND worker_id <> '' ORDER BY (id * 7919 + i.id) % 40 LIMIT 3) l ON true
WHERE i.state = 'escalated';
INSERT INTO labelling_consensus (item_id, label, confidence, posterior, agreement, method,
  n_labels, computed_at)
SELECT id, 'match', 0.6, '[0.6, 0.4]'::jsonb, 0.33, 'dawid-skene', 3, now()
FROM labelling_item WHERE state = 'escalated';
INSERT INTO labelling_escalation (project_id, item_id, reason, priority, created_at, resolution,
  label, crowd_label, note)
SELECT project_id, id, (ARRAY['low_confidence', 'gold_conflict', 'audit'])[1 + id % 3],
  random(), now(), '', '', '', ''
FROM labelling_item WHERE state = 'escalated';
UPDATE labelling_queueentry SET collecting = false
WHERE item_id IN (SELECT id FROM labelling_item WHERE state = 'escalated');
"""


def expert_credentials(env: dict[str, str]) -> tuple[str, str]:
    """(API token, session id) of a new expert of the project."""
    code = (
        "from django.test import Client; from labelling.models import Project; "
        "from labelling.services.labellers import labeller_create; "
        f"p = Project.objects.get(slug={SLUG!r}); "
        "labeller, token = labeller_create(project=p, username='ezra', role='expert'); "
        "c = Client(); c.force_login(labeller.user); "
        "print(token, c.cookies['sessionid'].value)"
    )
    _, out = bench.manage(env, "shell", "-c", code)
    token, session = out.strip().splitlines()[-1].split()
    return token, session


class Expert:
    """One expert's keep-alive connection, by token for the API and by cookie for the page."""

    def __init__(self, port: int, token: str, session: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.api = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.page = {"Cookie": f"sessionid={session}"}

    def call(
        self, method: str, path: str, headers: dict[str, str], body: bytes | None = None
    ) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data, (time.perf_counter() - started) * 1000


def expect(status: int, wanted: int, what: str, body: bytes) -> None:
    if status != wanted:
        raise SystemExit(f"{what}: HTTP {status}, wanted {wanted}: {body[:300]!r}")


def summary(name: str, values: list[float]) -> str:
    p50, p95 = bench.percentile(values, 50), bench.percentile(values, 95)
    return f"{name}: p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {max(values):.1f} ms (n={len(values)})"


def measure(args: argparse.Namespace, expert: Expert, run: int) -> dict[str, float]:
    """One run of (a), (b) and (c); prints and returns the p95s."""
    page = []
    for _ in range(args.page_requests):
        status, body, ms = expert.call("GET", f"/review/{SLUG}/", expert.page)
        expect(status, 200, "review page", body)
        page.append(ms)
    nexts, resolves = [], []
    for k in range(args.cycles):
        status, body, ms = expert.call(
            "GET", f"/api/v1/projects/{SLUG}/escalations/next", expert.api
        )
        expect(status, 200, "next", body)
        nexts.append(ms)
        pk = json.loads(body)["id"]
        decision = {"label": "match" if k % 2 else "no_match", "note": "benchmark"}
        status, body, ms = expert.call(
            "POST", f"/api/v1/escalations/{pk}/resolve", expert.api, json.dumps(decision).encode()
        )
        expect(status, 200, "resolve", body)
        resolves.append(ms)
    listing = []
    for _ in range(50):
        status, body, ms = expert.call(
            "GET", f"/api/v1/projects/{SLUG}/escalations?limit=50", expert.api
        )
        expect(status, 200, "list", body)
        listing.append(ms)
    print(f"run {run}: {bench.load()}")
    for name, values in (
        ("  (a) GET /review/{slug}/", page),
        ("  (b) GET escalations/next", nexts),
        ("  (b) POST escalations/{id}/resolve", resolves),
        ("  (c) GET escalations?limit=50", listing),
    ):
        print(summary(name, values))
    return {"page": bench.percentile(page, 95), "next": bench.percentile(nexts, 95)}


def set_up(args: argparse.Namespace, env: dict[str, str], dsn: str, workdir: Path) -> None:
    started = time.perf_counter()
    bench.manage(env, "migrate", "-v0")
    bench.project(env, workdir, SLUG, args.items, 3)
    bench.psql(dsn, ESCALATED_SQL.format(slug=SLUG, n=args.escalations))
    bench.analyze(dsn)
    counts = bench.psql(
        dsn,
        "SELECT (SELECT count(*) FROM labelling_item), (SELECT count(*) FROM labelling_escalation "
        "WHERE resolved_at IS NULL), (SELECT count(*) FROM labelling_label)",
    )
    took = time.perf_counter() - started
    print(f"set-up in {took:.0f} s: items, open escalations, labels = {counts}")


def main() -> None:
    signal.signal(signal.SIGTERM, bench.stop_on_sigterm)
    args = arguments()
    base_dsn = os.environ.get("DATABASE_URL", bench.DEFAULT_DSN)
    if not base_dsn.startswith("postgres"):
        raise SystemExit("DATABASE_URL must name a PostgreSQL database")
    if args.escalations < args.runs * args.cycles:
        raise SystemExit("--escalations must cover --runs × --cycles resolutions")
    schema = f"review_bench_{int(time.time())}"
    dsn = bench.with_schema(base_dsn, schema)
    env = bench.environment(args, dsn)
    port = bench.free_port()
    gunicorn = [bench.GUNICORN, "core.wsgi", "-b", f"127.0.0.1:{port}", "-w", str(args.workers)]
    gunicorn += ["--worker-class", "gthread", "--threads", str(args.threads)]
    bench.print_machine(args, gunicorn, base_dsn)
    redis_db = bench.RedisDb(args.redis_url)
    bench.psql(base_dsn, f"CREATE SCHEMA {schema}")
    results: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "gunicorn.log"
        server: subprocess.Popen[bytes] | None = None
        try:
            set_up(args, env, dsn, Path(tmp))
            token, session = expert_credentials(env)
            with log.open("wb") as out:
                server = subprocess.Popen(
                    gunicorn, cwd=bench.ROOT, env=env, stdout=out, stderr=out,
                    start_new_session=True,
                )  # fmt: skip
            bench.wait_until_serving(port, server, log)
            expert = Expert(port, token, session)
            expert.call("GET", f"/review/{SLUG}/", expert.page)  # warm every worker's imports
            results = [measure(args, expert, run + 1) for run in range(args.runs)]
        finally:
            if server is not None:
                bench.stop(server)
            if not args.keep:
                bench.psql(base_dsn, f"DROP SCHEMA {schema} CASCADE")
            redis_db.clear()
    report(results)


def report(results: list[dict[str, Any]]) -> None:
    page = sorted(r["page"] for r in results)[len(results) // 2]
    nxt = sorted(r["next"] for r in results)[len(results) // 2]
    ok = page < 100 and nxt < 100
    print(f"\nmedian of the runs' p95: review page {page:.1f} ms, next {nxt:.1f} ms (target < 100)")
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
