"""Labelling throughput against a peer checkout, in short runs taken in turn.

    .venv/bin/python benchmarks/labelling_peers.py --peer ../quorum-before [--rounds 6 --seconds 10]

On a shared machine whose speed drifts by a third over minutes, two benchmark runs minutes apart
compare the machine as much as the code. This script sets up both checkouts' schemas with their own
`benchmarks/labelling.py` (`--keep`), starts both gunicorns at once (each idle while the other is
measured), then takes (b) runs, 32 labellers for --seconds each, in turn: the peer with separate
`tasks/next` and answer calls, this checkout the same way, this checkout with answers that bring
the next item (the labelling page's way); the order rotates every round. It prints each round and
the medians, with this checkout's ratios to the peer within each round.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if sys.path and Path(sys.path[0]).resolve() == HERE:
    sys.path.pop(0)  # this folder's queue.py would hide the standard library's
_spec = importlib.util.spec_from_file_location("labelling_bench", HERE / "labelling.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
# Registered by name, so that the client processes (spawned: they import this script again)
# find the functions they are sent.
sys.modules["labelling_bench"] = bench
_spec.loader.exec_module(bench)

CROWD_TOKENS = (
    "SELECT t.key FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id "
    "WHERE u.username ~ '^crowd[0-9]+$' ORDER BY u.username"
)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peer", required=True, type=Path, help="the other checkout")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    return parser.parse_args()


def keep_schema(tree: Path, base_dsn: str) -> str:
    """Build the projects in a schema of their own with that checkout's benchmark; its name."""
    command = [str(tree / ".venv/bin/python"), "benchmarks/labelling.py", "--only", "a"]
    command += ["--runs", "1", "--cycles", "20", "--seconds", "120", "--keep"]
    env = {**os.environ, "DATABASE_URL": base_dsn}
    out = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        if line.startswith("schema: "):
            return line.split()[1]
    raise SystemExit(f"{tree}: no schema in the benchmark's output:\n{out.stdout[-2000:]}")


def serve(
    tree: Path, dsn: str, args: argparse.Namespace, log: Path
) -> tuple[int, subprocess.Popen[bytes]]:
    """That checkout's gunicorn (3 workers × 4 threads, as the benchmark) on the schema."""
    port = bench.free_port()
    gunicorn = [str(tree / ".venv/bin/gunicorn"), "core.wsgi", "-b", f"127.0.0.1:{port}"]
    gunicorn += ["-w", "3", "--worker-class", "gthread", "--threads", "4"]
    env = {**bench.environment(args, dsn), "PYTHONPATH": str(tree)}
    with log.open("wb") as out:
        server = subprocess.Popen(
            gunicorn, cwd=tree, env=env, stdout=out, stderr=out, start_new_session=True
        )
    bench.wait_until_serving(port, server, log)
    return port, server


def main() -> None:
    args = arguments()
    base_dsn = os.environ.get("DATABASE_URL", bench.DEFAULT_DSN)
    here, peer = bench.ROOT, args.peer.resolve()
    print(f"machine: {bench.sh('nproc')} cores, {bench.load()}")
    print(f"this checkout: {here} ({bench.sh(f'git -C {here} rev-parse --short HEAD')})")
    print(f"peer: {peer} ({bench.sh(f'git -C {peer} rev-parse --short HEAD')})")
    redis_db = bench.RedisDb(args.redis_url)  # cleared afterwards if it is empty now
    schemas: dict[str, str] = {}
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for name, tree in (("peer", peer), ("this", here)):
            schemas[name] = keep_schema(tree, base_dsn)
        with tempfile.TemporaryDirectory() as tmp:
            ports: dict[str, int] = {}
            tokens: dict[str, list[str]] = {}
            dsns: dict[str, str] = {}
            for name, tree in (("peer", peer), ("this", here)):
                dsns[name] = bench.with_schema(base_dsn, schemas[name])
                tokens[name] = bench.psql(dsns[name], CROWD_TOKENS).split()
                ports[name], server = serve(tree, dsns[name], args, Path(tmp) / f"{name}.log")
                servers.append(server)
            kinds = [("peer", False), ("this", False), ("this", True)]
            rates: dict[tuple[str, bool], list[float]] = {kind: [] for kind in kinds}
            for round_ in range(args.rounds):
                order = kinds[round_ % 3 :] + kinds[: round_ % 3]
                line = []
                for name, chained in order:
                    bench.analyze(dsns[name])
                    tally, seconds = bench.crowd_run(
                        ports[name], "load", tokens[name], args.client_processes,
                        args.seconds, stop_when_done=False, chained=chained,
                    )  # fmt: skip
                    if tally.errors:
                        raise SystemExit(f"{name}: {tally.errors[:3]}")
                    rates[(name, chained)].append(len(tally.answered) / seconds)
                    label = f"{name}{' chained' if chained else ''}"
                    line.append(f"{label} {rates[(name, chained)][-1]:.0f}")
                print(f"  round {round_ + 1}: " + ", ".join(line) + f" labels/s  ({bench.load()})")
            peer_rates = rates[("peer", False)]
            for (name, chained), values in rates.items():
                ratios = [v / p for v, p in zip(values, peer_rates, strict=True)]
                print(
                    f"  median, {name}{', chained' if chained else ', separate'}: "
                    f"{statistics.median(values):,.0f} labels/s; against the peer in the same "
                    f"round: median {statistics.median(ratios):.2f}× ({min(ratios):.2f}–"
                    f"{max(ratios):.2f}×)"
                )
    finally:
        for server in servers:
            bench.stop(server)
        for schema in schemas.values():
            bench.psql(base_dsn, f"DROP SCHEMA {schema} CASCADE")
        redis_db.clear()


if __name__ == "__main__":
    main()
