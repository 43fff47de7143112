"""Time scoring + queue selection over a million random predictions (contract's example policy).

Run from the repository root:  PYTHONPATH=. .venv/bin/python benchmarks/select_numerics.py

Each case reports the median wall time of `select_items` over several runs; that call validates
the inputs, computes every score the policy needs and selects. Building the random data is not
timed. The mutual-information case uses fewer rows by default (--mi-rows) because its n x 8 x 10
sample array is 640 MB at a million rows; pass --mi-rows 1000000 to time that size anyway.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelling.numerics.selection import SelectionResult, select_items

POLICY: list[dict[str, Any]] = [
    {"rule": "near_threshold", "band": 0.1},
    {"rule": "uncertain", "measure": "entropy", "top": 2000},
    {"rule": "confident", "min_confidence": 0.97, "fraction": 0.02},
    {"rule": "random", "fraction": 0.01},
]
BUDGET = 5000


def predictions(rng: np.random.Generator, n: int, k: int) -> NDArray[np.float64]:
    """Dirichlet(0.3) rows: peaked like a trained model, with a spread of doubtful ones."""
    raw = rng.gamma(0.3, size=(n, k)) + 1e-12  # the floor keeps every row's sum above zero
    return raw / raw.sum(axis=1, keepdims=True)


def mc_samples(
    rng: np.random.Generator, P: NDArray[np.float64], m: int, missing: float
) -> NDArray[np.float64]:
    """m Dirichlet samples around each row of P; a `missing` share of rows has none (NaN)."""
    raw = rng.gamma(20.0 * P[:, None, :] + 1e-3, size=(P.shape[0], m, P.shape[1]))
    samples = raw / raw.sum(axis=2, keepdims=True)
    samples[rng.random(P.shape[0]) < missing] = np.nan
    return samples


def median_seconds(runs: int, call: Any) -> tuple[float, SelectionResult]:
    """Median wall time of `runs` calls, and the last call's result."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def report(label: str, seconds: float, result: SelectionResult) -> None:
    """Print one case's timing and how many items each rule took."""
    counts = " ".join(str(c) for c in result.rule_counts.tolist())
    print(f"{label:<48} median {seconds * 1000:7.1f} ms   per-rule counts [{counts}]")


def bench_policy(rng: np.random.Generator, n: int, k: int, runs: int) -> None:
    """The contract's policy, with the contract's budget and with no budget."""
    P = predictions(rng, n, k)
    eligible = rng.random(n) < 0.95  # 5% already queued or labelled
    for budget in (BUDGET, None):
        seconds, result = median_seconds(
            runs,
            lambda b=budget: select_items(
                P, POLICY, eligible=eligible, positive_index=0, threshold=0.5, budget=b, seed=1
            ),
        )
        report(f"n={n:,} k={k} budget={budget}", seconds, result)


def bench_mutual_information(rng: np.random.Generator, n: int, runs: int) -> None:
    """The policy with mutual information (8 samples, 10% of rows without) in place of entropy."""
    P = predictions(rng, n, 10)
    samples = mc_samples(rng, P, 8, missing=0.1)
    policy = [dict(rule) for rule in POLICY]
    policy[1]["measure"] = "mutual_information"
    seconds, result = median_seconds(
        runs, lambda: select_items(P, policy, samples=samples, budget=None, seed=1)
    )
    report(f"n={n:,} k=10 m=8 mutual_information budget=None", seconds, result)


def main() -> None:
    """Parse the options and run every case."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--mi-rows", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(2024)
    print(f"numpy {np.__version__}; median of {args.runs} runs of select_items (scoring included)")
    for k in (2, 10):
        bench_policy(rng, args.rows, k, args.runs)
    bench_mutual_information(rng, args.mi_rows, args.runs)


if __name__ == "__main__":
    main()
