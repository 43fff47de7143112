"""Release benchmark: `manage.py export_release` of 1,000,000 approved items on PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_bench \
        .venv/bin/python benchmarks/release.py --items 1000000 --runs 3

Set-up, not part of the timings: a fresh project whose items are all approved, each with a
two-field payload, a prediction, a queue entry, three valid labels from 1,000 labellers and a
consensus row, written by INSERT … SELECT generate_series (about two minutes), then VACUUM
(ANALYZE). The labels are stored in a shuffled order, as a crowd's labels arrive: written item
by item, each item's labels would sit side by side and a release would read them far faster
than it can in a real project (the figures in BENCHMARKS.md before 2026-12-04 were measured
so). Each run is the real `manage.py export_release SLUG --out DIR [--format F]` in a child
process (process start, data checks, streaming, hashing and publishing included), sampling the
resident memory of the child every 0.2 s. The data do not change between runs, so every run of
one format must print the same sha256: the benchmark checks it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder comes first on sys.path, where queue.py and labelling.py would hide
# the standard library's queue (psycopg needs it) and the labelling package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent), *(p for p in sys.path if p and Path(p).resolve() != HERE)]
import psycopg  # noqa: E402

from benchmarks.ingest import manage, run  # noqa: E402

LABELLERS = 1000


def load(dsn: str, slug: str, items: int) -> None:
    """Write `items` approved items with everything a release row reads."""
    with psycopg.connect(dsn, autocommit=True) as db:
        project = db.execute("SELECT id FROM labelling_project WHERE slug = %s", [slug]).fetchone()
        assert project is not None
        pid = project[0]
        steps = {
            "items": f"""
                INSERT INTO labelling_item (project_id, external_id, payload, content_hash, source,
                    split, created_at, state, gold_label, decided_at)
                SELECT {pid}, 'r' || lpad(g::text, 8, '0'),
                    jsonb_build_object('text', 'customer message number ' || g, 'price', g % 200),
                    md5(g::text) || md5((-g)::text), 'bench',
                    CASE WHEN g % 5 = 0 THEN 'test' ELSE 'train' END,
                    now() - make_interval(secs => g), 'approved', '', now()
                FROM generate_series(1, {items}) g""",
            "predictions": f"""
                INSERT INTO labelling_prediction (item_id, model_version, probabilities,
                    predicted_label, confidence, digest, created_at)
                SELECT id, 'm1',
                    jsonb_build_array(0.5 + (id % 50) / 100.0, 0.5 - (id % 50) / 100.0),
                    'match', 0.5 + (id % 50) / 100.0, md5(id::text), now()
                FROM labelling_item WHERE project_id = {pid}""",
            "policy": f"""
                INSERT INTO labelling_queuepolicy (project_id, version, rules, created_at)
                VALUES ({pid}, 1, '[]', now())""",
            "queue entries": f"""
                INSERT INTO labelling_queueentry (project_id, item_id, rule, score, policy_id,
                    model_version, priority, created_at, needed, labels_count, open_leases,
                    collecting)
                SELECT {pid}, i.id, CASE WHEN i.id % 3 = 0 THEN 'uncertain' ELSE 'near_threshold'
                    END, 0.1, p.id, 'm1', i.id, now(), 3, 3, 0, false
                FROM labelling_item i, labelling_queuepolicy p
                WHERE i.project_id = {pid} AND p.project_id = {pid}""",
            "labellers": f"""
                INSERT INTO labelling_labeller (created_at, updated_at, project_id, platform,
                    worker_id, role, status, n_labels, gold_answers, flags)
                SELECT now(), now(), {pid}, 'import', 'w' || g, 'crowd', 'active', 0, 0, '[]'
                FROM generate_series(1, {LABELLERS}) g""",
            "labels": f"""
                INSERT INTO labelling_label (project_id, item_id, labeller_id, value, source, batch,
                    created_at, state, void_reason)
                SELECT {pid}, i.id, w.first + (i.id * 3 + k) % {LABELLERS},
                    CASE WHEN i.id % 4 = 0 THEN 'no_match' ELSE 'match' END, 'import', '',
                    now() - make_interval(secs => k), 'valid', ''
                FROM labelling_item i, generate_series(0, 2) k,
                     (SELECT min(id) AS first FROM labelling_labeller
                      WHERE project_id = {pid}) w
                WHERE i.project_id = {pid}
                -- Stored in no particular item order, as labels arrive from a crowd: an item's
                -- labels lie far apart in the table, not next to each other.
                ORDER BY md5(i.id::text || '-' || k)""",
            "consensus": f"""
                INSERT INTO labelling_consensus (item_id, label, confidence, posterior, agreement,
                    method, n_labels, computed_at)
                SELECT id, CASE WHEN id % 4 = 0 THEN 'no_match' ELSE 'match' END, 0.97,
                    '[0.97, 0.03]', 1.0, 'dawid-skene', 3, now()
                FROM labelling_item WHERE project_id = {pid}""",
        }
        for name, sql in steps.items():
            start = time.perf_counter()
            db.execute(sql)
            print(f"  set-up: {name} in {time.perf_counter() - start:.1f} s")
        for table in ("item", "prediction", "queueentry", "label", "consensus", "labeller"):
            db.execute(f"VACUUM (ANALYZE) labelling_{table}")
        db.execute("CHECKPOINT")


def export(env: dict[str, str], slug: str, out: Path, fmt: str) -> tuple[float, int, str, int]:
    """One export_release run: seconds, peak RSS, sha256, rows."""
    seconds, stdout, peak = run(
        [sys.executable, "manage.py", "export_release", slug, "--out", str(out), "--format", fmt],
        env,
    )
    found = re.search(r"release v(\d+): (\d+) rows, sha256 ([0-9a-f]{64})", stdout)
    if not found:
        raise SystemExit(f"unexpected output:\n{stdout}")
    rows = int(found.group(2))
    print(
        f"  {fmt} v{found.group(1)}: {seconds:.2f} s = {rows / seconds:,.0f} rows/s, "
        f"peak RSS {peak / 2**20:.0f} MiB, sha256 {found.group(3)[:16]}…"
    )
    return seconds, peak, found.group(3), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--formats", default="jsonl,csv,manifest")
    parser.add_argument("--slug", help="export an already loaded project again (skips set-up)")
    args = parser.parse_args()
    dsn = os.environ.get("DATABASE_URL", "")
    if not dsn.startswith("postgres"):
        raise SystemExit("set DATABASE_URL to a PostgreSQL database (the benchmark is for it)")
    env = {**os.environ, "DEBUG": "1", "PYTHONPATH": str(HERE.parent)}
    manage(env, "migrate", "-v0")
    slug = args.slug or f"release-bench-{int(time.time())}"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        spec = out / "spec.json"
        spec.write_text(json.dumps({"slug": slug, "labels": ["match", "no_match"]}))
        print(f"{args.items:,} approved items; {os.cpu_count()} cores, {platform.machine()}, "
              f"Python {platform.python_version()}")  # fmt: skip
        if not args.slug:
            manage(env, "create_project", "--spec", str(spec))
            load(dsn, slug, args.items)
        for fmt in args.formats.split(","):
            results = [export(env, slug, out, fmt) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in results)
            hashes = {r[2] for r in results}
            same = "the same in every run" if len(hashes) == 1 else f"DIFFERS: {hashes}"
            size = sum(f.stat().st_size for f in out.rglob(f"data.{fmt}")) / len(results)
            print(
                f"{fmt}: median {seconds:.2f} s = {results[0][3] / seconds:,.0f} rows/s; "
                f"peak RSS {max(r[1] for r in results) / 2**20:.0f} MiB; "
                f"{size / 1e6:.0f} MB a file; "
                f"sha256 {same}"
            )


if __name__ == "__main__":
    main()
