"""Crowd fixtures for the numerics tests: a seeded simulated crowd and the published crowd data.

The simulation plants workers of known kinds (good, biased, random, constant, too fast) over items
whose true class is known, so tests can check that aggregation recovers the truth and that the
detectors find exactly the planted workers. ``load_crowd_data`` reads the published data sets in
``../shared/crowd_data/`` (never copied into the repository) into the same shape.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

# ../shared beside the repository root; a user's clone has none, and tests then skip.
SHARED = Path(__file__).resolve().parents[2].parent / "shared"

KINDS = ("good", "biased", "random", "constant", "too_fast")


@dataclass(frozen=True)
class Crowd:
    """Labels as parallel code arrays, with the truth (-1 where unknown) and worker kinds."""

    items: NDArray[np.int64]
    workers: NDArray[np.int64]
    labels: NDArray[np.int64]
    n_items: int
    n_workers: int
    n_classes: int
    truth: NDArray[np.int64]
    durations: NDArray[np.float64] | None = None
    kinds: NDArray[np.str_] = field(default_factory=lambda: np.array([], dtype=str))

    @property
    def arrays(self) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
        """The three parallel label arrays."""
        return self.items, self.workers, self.labels

    @property
    def sizes(self) -> tuple[int, int, int]:
        """n_items, n_workers, n_classes."""
        return self.n_items, self.n_workers, self.n_classes

    def workers_of(self, *kinds: str) -> set[int]:
        """The codes of the workers planted as any of ``kinds``."""
        return {int(w) for w in np.flatnonzero(np.isin(self.kinds, kinds))}


def _confusions(kinds: NDArray[np.str_], n_classes: int, rng: np.random.Generator) -> NDArray:
    """One true-class x answer confusion matrix per worker, by kind."""
    n_workers = kinds.size
    k = n_classes
    off = np.ones((k, k)) - np.eye(k)
    accuracy = rng.uniform(0.8, 0.93, n_workers)[:, None, None]
    confusion = accuracy * np.eye(k) + (1 - accuracy) * off / (k - 1)
    # Biased: careful on most classes, but answers class 0 for half the items of class 1.
    biased = confusion[kinds == "biased"]
    careful = rng.uniform(0.9, 0.96, (biased.shape[0], 1))
    biased[:] = careful[:, :, None] * np.eye(k) + (1 - careful[:, :, None]) * off / (k - 1)
    biased[:, 1] = 0.0
    biased[:, 1, 0], biased[:, 1, 1] = 0.5, 0.5
    confusion[kinds == "biased"] = biased
    confusion[kinds == "random"] = 1.0 / k
    constant = np.zeros((k, k))
    constant[:, k - 1] = 1.0
    confusion[kinds == "constant"] = constant
    return confusion


def _assign(n_items: int, n_workers: int, per_item: int, rng: np.random.Generator) -> NDArray:
    """Choose ``per_item`` distinct workers for each item (n_items x per_item)."""
    chosen = rng.integers(0, n_workers, (n_items, per_item))
    clash = np.ones(n_items, bool)
    while clash.any():
        # Redraw only the rows that picked a worker twice, until every row is distinct.
        chosen[clash] = rng.integers(0, n_workers, (int(clash.sum()), per_item))
        ordered = np.sort(chosen, axis=1)
        clash = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    return chosen


def _answers(
    confusion: NDArray, truth: NDArray, workers: NDArray, rng: np.random.Generator
) -> NDArray:
    """Draw each answer from its worker's confusion row for the item's true class."""
    rows = confusion[workers, truth]
    cumulative = rows.cumsum(axis=1)
    draws = rng.random(workers.size)[:, None]
    return np.minimum((draws > cumulative).sum(axis=1), confusion.shape[2] - 1).astype(np.int64)


def _durations(kinds: NDArray[np.str_], workers: NDArray, rng: np.random.Generator) -> NDArray:
    """Seconds per answer: about 8 s, about 1 s for too-fast workers, 10 % unknown (NaN)."""
    median = np.where(kinds == "too_fast", 1.0, rng.uniform(5.0, 12.0, kinds.size))
    seconds = median[workers] * rng.lognormal(0.0, 0.4, workers.size)
    seconds[rng.random(workers.size) < 0.1] = np.nan
    return seconds


def simulate_crowd(
    *,
    n_items: int = 4000,
    n_classes: int = 3,
    per_item: int = 5,
    counts: dict[str, int] | None = None,
    priors: tuple[float, ...] | None = None,
    seed: int = 7,
) -> Crowd:
    """Simulate a seeded crowd with planted worker kinds; see ``KINDS``."""
    counts = counts or {"good": 40, "biased": 10, "random": 5, "constant": 4, "too_fast": 3}
    rng = np.random.default_rng(seed)
    kinds = np.repeat(np.array(list(counts), dtype=str), list(counts.values()))
    kinds = kinds[rng.permutation(kinds.size)]
    p = np.full(n_classes, 1.0 / n_classes) if priors is None else np.asarray(priors)
    truth = rng.choice(n_classes, size=n_items, p=p).astype(np.int64)
    items = np.repeat(np.arange(n_items, dtype=np.int64), per_item)
    workers = _assign(n_items, kinds.size, per_item, rng).ravel()
    confusion = _confusions(kinds, n_classes, rng)
    labels = _answers(confusion, truth[items], workers, rng)
    return Crowd(
        items, workers, labels, n_items, kinds.size, n_classes, truth,
        durations=_durations(kinds, workers, rng), kinds=kinds,
    )  # fmt: skip


def _codes(values: list[str]) -> tuple[NDArray[np.int64], NDArray]:
    """Map strings to codes 0..n-1 (integers in numeric order) and return the distinct values."""
    array = np.array(values)
    if all(value.lstrip("-").isdigit() for value in values):
        array = array.astype(np.int64)
    names, codes = np.unique(array, return_inverse=True)
    return codes.astype(np.int64), names


def _read_csv(path: Path) -> list[list[str]]:
    """Rows of a CSV file without its header."""
    with path.open(newline="") as handle:
        return list(csv.reader(handle))[1:]


def load_crowd_data(name: str, root: Path = SHARED) -> Crowd:
    """Load ``crowd_data/<name>/`` (answers.csv, truth.csv) as codes; truth -1 where unknown."""
    folder = root / "crowd_data" / name
    answers = _read_csv(folder / "answers.csv")
    truth_rows = _read_csv(folder / "truth.csv")
    items, item_names = _codes([row[0] for row in answers])
    workers, worker_names = _codes([row[1] for row in answers])
    labels, class_names = _codes([row[2] for row in answers])
    # Truth values are read as strings: give them the dtype the answers' codes were built from.
    gold_items = np.array([row[0] for row in truth_rows]).astype(item_names.dtype)
    gold_labels = np.array([row[1] for row in truth_rows]).astype(class_names.dtype)
    known = np.isin(gold_items, item_names)
    if not np.isin(gold_labels, class_names).all():
        raise ValueError(f"{name}: truth.csv holds a class no answer uses")
    truth = np.full(len(item_names), -1, np.int64)
    truth[np.searchsorted(item_names, gold_items[known])] = np.searchsorted(
        class_names, gold_labels[known]
    )
    return Crowd(
        items, workers, labels, len(item_names), len(worker_names), len(class_names), truth
    )
