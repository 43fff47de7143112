"""Benchmark of the aggregation numerics: Dawid-Skene on a million labels, and against crowd-kit.

Run from the repository root:

    PYTHONPATH=. python benchmarks/aggregate_numerics.py

(a) times ``dawid_skene`` on a synthetic set of 1,000,000 labels (200,000 items x 5 labels,
2,000 workers, 3 classes), median of 5 runs; (b) on each published crowd data set in
``../shared/crowd_data/`` times our fit and crowd-kit's ``DawidSkene`` (median of 5 runs each)
and prints the accuracy of both on the gold items and the speed ratio. crowd-kit is optional and
is never a dependency of Quorum: install it into a throwaway virtualenv
(``pip install crowd-kit==1.4.2 numpy``) and run this script with that interpreter. Times cover
the fit on ready arrays (ours) or a ready DataFrame (crowd-kit), not reading the CSV files.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from labelling.numerics.aggregation import dawid_skene, majority_vote
from tests.numerics.crowd_sim import SHARED, Crowd, load_crowd_data, simulate_crowd

RUNS = 5
TARGET_SECONDS = 2.0
CROWD_DATA = ("bluebirds", "d_product", "web")
SYNTHETIC_WORKERS = {"good": 1400, "biased": 400, "random": 120, "constant": 40, "too_fast": 40}


def median_seconds(fit: Callable[[], Any], runs: int = RUNS) -> tuple[float, Any]:
    """Median wall time of ``runs`` calls of ``fit``, and the last call's result."""
    times = []
    result = None
    for _ in range(runs):
        start = time.perf_counter()
        result = fit()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def accuracy(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Share of items with a known truth that ``predicted`` gets right."""
    known = truth >= 0
    return float(np.mean(predicted[known] == truth[known]))


def synthetic() -> None:
    """(a) Dawid-Skene on 1,000,000 synthetic labels."""
    crowd = simulate_crowd(n_items=200_000, per_item=5, counts=SYNTHETIC_WORKERS, seed=1)
    seconds, result = median_seconds(lambda: dawid_skene(*crowd.arrays, *crowd.sizes))
    voted, _ = majority_vote(crowd.items, crowd.labels, crowd.n_items, crowd.n_classes)
    verdict = "met" if seconds < TARGET_SECONDS else "MISSED"
    print(f"(a) synthetic: {crowd.items.size:,} labels, {crowd.n_items:,} items, ", end="")
    print(f"{crowd.n_workers:,} workers, {crowd.n_classes} classes")
    print(f"    dawid_skene median of {RUNS}: {seconds:.3f} s ", end="")
    print(f"({verdict}: target < {TARGET_SECONDS} s)")
    print(f"    iterations {result.n_iter}, converged {result.converged}")
    # Harder data need more EM iterations: show the worst case that max_iter allows.
    slowest, _ = median_seconds(lambda: dawid_skene(*crowd.arrays, *crowd.sizes, tol=0.0), 1)
    print(f"    worst case, EM forced to all 100 iterations (tol=0), 1 run: {slowest:.3f} s")
    print(f"    accuracy: dawid_skene {accuracy(result.labels, crowd.truth):.4f}, ", end="")
    print(f"majority vote {accuracy(voted, crowd.truth):.4f}")


def crowd_kit_fit(crowd: Crowd) -> Callable[[], np.ndarray] | None:
    """A call that fits crowd-kit's DawidSkene on the data set, or None without crowd-kit."""
    try:
        import pandas as pd
        from crowdkit.aggregation import DawidSkene
    except ImportError:
        return None
    frame = pd.DataFrame({"task": crowd.items, "worker": crowd.workers, "label": crowd.labels})

    def fit() -> np.ndarray:
        found = DawidSkene(n_iter=100).fit_predict(frame)
        labels = np.full(crowd.n_items, -1, np.int64)
        labels[found.index.to_numpy(np.int64)] = found.to_numpy(np.int64)
        return labels

    return fit


def recall(predicted: np.ndarray, truth: np.ndarray, n_classes: int) -> str:
    """Per-class recall on the items with a known truth, formatted."""
    values = [np.mean(predicted[truth == k] == k) for k in range(n_classes)]
    return " ".join(f"{value:.3f}" for value in values)


def compare(name: str) -> None:
    """(b) Our Dawid-Skene against crowd-kit's on one published data set."""
    crowd = load_crowd_data(name)
    ours, result = median_seconds(lambda: dawid_skene(*crowd.arrays, *crowd.sizes))
    voted, _ = majority_vote(crowd.items, crowd.labels, crowd.n_items, crowd.n_classes)
    print(f"    {name}: {crowd.items.size:,} labels, {crowd.n_items:,} items, ", end="")
    print(f"{crowd.n_workers} workers")
    print(f"      majority vote accuracy {accuracy(voted, crowd.truth):.4f}")
    print(f"      ours      median {ours * 1e3:9.2f} ms  ", end="")
    print(f"accuracy {accuracy(result.labels, crowd.truth):.4f}")
    fit = crowd_kit_fit(crowd)
    if fit is None:
        print("      crowd-kit skipped: crowdkit (and pandas) not importable")
        return
    theirs, labels = median_seconds(fit)
    print(f"      crowd-kit median {theirs * 1e3:9.2f} ms  ", end="")
    print(f"accuracy {accuracy(labels, crowd.truth):.4f}")
    print(f"      ours is {theirs / ours:.1f}x faster")
    if name == "d_product":
        print(f"      per-class recall, ours: {recall(result.labels, crowd.truth, 2)}; ", end="")
        print(f"crowd-kit: {recall(labels, crowd.truth, 2)}; majority vote: ", end="")
        print(recall(voted, crowd.truth, 2))


def main() -> None:
    """Print the machine, then both benchmarks."""
    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs")
    synthetic()
    if not (SHARED / "crowd_data").is_dir():
        print("(b) skipped: ../shared/crowd_data/ not present on this machine")
        return
    try:
        import crowdkit

        print(
            f"(b) published crowd data, ours vs crowd-kit {crowdkit.__version__}, median of {RUNS}"
        )
    except ImportError:
        print(f"(b) published crowd data, median of {RUNS} (crowd-kit not importable: skipped)")
    for name in CROWD_DATA:
        compare(name)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
