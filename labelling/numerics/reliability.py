"""Per-labeller reliability figures, and detectors that name what looks wrong with a labeller.

Figures per worker: number of labels, expected accuracy under a fitted Dawid-Skene model, accuracy
on gold items with a Wilson interval, and chance-corrected agreement with the consensus of the
other labellers. Detectors turn them into flags (``random``, ``constant``, ``too_fast``,
``low_gold_accuracy``); every threshold is a keyword argument whose default lives in
``ReliabilityThresholds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from labelling.numerics.aggregation import (
    BoolArray,
    DawidSkeneResult,
    FloatArray,
    Gold,
    IntArray,
    check_item_labels,
    check_labels,
    gold_arrays,
    label_counts,
)
from labelling.numerics.agreement import kappa_from_tables


@dataclass(frozen=True)
class ReliabilityThresholds:
    """Thresholds of the detectors, with their defaults.

    - ``min_labels`` (20): ``random`` and ``constant`` judge only labellers with this many labels
      (for ``random``: labels compared against a consensus).
    - ``random_margin`` (0.2): ``random`` when even the upper confidence bound of the labeller's
      kappa against the others' consensus is at or below this, i.e. at most slight agreement.
    - ``max_entropy`` (0.1): ``constant`` when the entropy of the labeller's answers, divided by
      log(n_classes) so it runs 0..1, is at or below this, and the lower confidence bound of
      their modal class's share exceeds that class's share among the other labels on the same
      items (so neither a labeller whose items really are all one class nor a data set that is
      itself constant raises it).
    - ``too_fast_ratio`` (0.25) and ``min_timed`` (10): ``too_fast`` when the median of at least
      ``min_timed`` known durations is below this fraction of the project's median.
    - ``min_gold_accuracy`` (0.7) and ``min_gold`` (10): ``low_gold_accuracy`` when the Wilson
      upper bound of accuracy on at least ``min_gold`` gold answers is below this.
    - ``z`` (1.96): the normal quantile of every interval (95 % two-sided).
    """

    min_labels: int = 20
    random_margin: float = 0.2
    max_entropy: float = 0.1
    too_fast_ratio: float = 0.25
    min_timed: int = 10
    min_gold_accuracy: float = 0.7
    min_gold: int = 10
    z: float = 1.96


DEFAULTS = ReliabilityThresholds()


def wilson_interval(
    successes: ArrayLike, trials: ArrayLike, *, z: float = DEFAULTS.z
) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval (lower, upper) of a proportion; NaN where there are no trials."""
    hits = np.asarray(successes, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    if np.any(n < 0) or np.any(hits < 0) or np.any(hits > n):
        raise ValueError("successes must lie between 0 and trials")
    with np.errstate(invalid="ignore", divide="ignore"):
        share = hits / n
        spread = z * z / n
        centre = (share + spread / 2.0) / (1.0 + spread)
        half = z / (1.0 + spread) * np.sqrt(share * (1.0 - share) / n + spread / (4.0 * n))
    return centre - half, centre + half


def expected_accuracy(confusion: ArrayLike, priors: ArrayLike) -> FloatArray:
    """Each worker's accuracy implied by a model: sum over t of prior[t] * confusion[w, t, t]."""
    matrices = np.asarray(confusion, dtype=np.float64)
    weights = np.asarray(priors, dtype=np.float64)
    if matrices.ndim != 3 or matrices.shape[1:] != (weights.size, weights.size):
        raise ValueError("confusion must be n_workers x n_classes x n_classes, matching priors")
    return matrices.diagonal(axis1=1, axis2=2) @ weights


@dataclass(frozen=True)
class GoldAccuracy:
    """Per worker: gold answers given, how many were right, the accuracy and its Wilson bounds."""

    n_gold: IntArray
    n_correct: IntArray
    accuracy: FloatArray
    lower: FloatArray
    upper: FloatArray


def gold_accuracy(
    items: ArrayLike,
    workers: ArrayLike,
    labels: ArrayLike,
    n_items: int,
    n_workers: int,
    n_classes: int,
    *,
    gold: Gold | None,
    z: float = DEFAULTS.z,
) -> GoldAccuracy:
    """Each worker's accuracy on gold items ({item: class} or (items, classes))."""
    item_codes, worker_codes, label_codes = check_labels(
        items, workers, labels, n_items, n_workers, n_classes
    )
    gold_items, gold_classes = gold_arrays(gold, n_items, n_classes)
    truth = np.full(n_items, -1, np.int64)
    truth[gold_items] = gold_classes
    answer_truth = truth[item_codes]
    on_gold = answer_truth >= 0
    n_gold = np.bincount(worker_codes[on_gold], minlength=n_workers)
    right = on_gold & (label_codes == answer_truth)
    n_correct = np.bincount(worker_codes[right], minlength=n_workers)
    lower, upper = wilson_interval(n_correct, n_gold, z=z)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = n_correct / n_gold
    return GoldAccuracy(n_gold, n_correct, accuracy, lower, upper)


@dataclass(frozen=True)
class ConsensusAgreement:
    """Per worker, agreement with the leave-one-out majority of the other labels on each item.

    ``n_compared`` counts the worker's labels whose item has a strict majority among the other
    labels (ties and lone labels are left out). ``kappa`` is Cohen's kappa of the worker against
    that consensus, with a normal-approximation interval. ``youden_j`` (binary label sets only,
    NaN otherwise) is sensitivity + specificity - 1 against the consensus, which class skew does
    not deflate the way it deflates kappa.
    """

    n_compared: IntArray
    observed: FloatArray
    kappa: FloatArray
    kappa_lower: FloatArray
    kappa_upper: FloatArray
    youden_j: FloatArray


def others_on_item(items: ArrayLike, labels: ArrayLike, n_items: int, n_classes: int) -> IntArray:
    """For each label, how many of the other labels on its item fall in each class (N x k)."""
    item_codes, label_codes = check_item_labels(items, labels, n_items, n_classes)
    others = label_counts(item_codes, label_codes, n_items, n_classes)[item_codes]
    others[np.arange(label_codes.size), label_codes] -= 1
    return others


def leave_one_out_consensus(others: IntArray) -> IntArray:
    """For each label, the strict majority class of the other labels on its item, or -1 if none."""
    top = others.max(axis=1, initial=0)
    strict = (others == top[:, None]).sum(axis=1) == 1
    return np.where(strict & (top > 0), others.argmax(axis=1), -1)


def _youden_j(tables: FloatArray) -> FloatArray:
    """Sensitivity + specificity - 1 of 2 x 2 tables (rows: worker, columns: consensus)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        specificity = tables[:, 0, 0] / tables[:, :, 0].sum(axis=1)
        sensitivity = tables[:, 1, 1] / tables[:, :, 1].sum(axis=1)
    return sensitivity + specificity - 1.0


def consensus_agreement(
    items: ArrayLike,
    workers: ArrayLike,
    labels: ArrayLike,
    n_items: int,
    n_workers: int,
    n_classes: int,
    *,
    z: float = DEFAULTS.z,
) -> ConsensusAgreement:
    """Chance-corrected agreement of each worker with the others' leave-one-out consensus."""
    item_codes, worker_codes, label_codes = check_labels(
        items, workers, labels, n_items, n_workers, n_classes
    )
    others = others_on_item(item_codes, label_codes, n_items, n_classes)
    return _agreement(worker_codes, label_codes, others, n_workers, z)


def _agreement(
    workers: IntArray, labels: IntArray, others: IntArray, n_workers: int, z: float
) -> ConsensusAgreement:
    """``consensus_agreement`` from validated codes and ``others_on_item``."""
    k = others.shape[1]
    consensus = leave_one_out_consensus(others)
    used = consensus >= 0
    cells = (workers[used] * k + labels[used]) * k + consensus[used]
    tables = np.bincount(cells, minlength=n_workers * k * k).reshape(n_workers, k, k)
    kappa, observed, chance = kappa_from_tables(tables)
    n = tables.sum(axis=(1, 2))
    # Cohen's (1960) large-sample standard error of kappa.
    with np.errstate(invalid="ignore", divide="ignore"):
        error = np.sqrt(observed * (1.0 - observed) / n) / (1.0 - chance)
    youden = _youden_j(tables.astype(np.float64)) if k == 2 else np.full(n_workers, np.nan)
    return ConsensusAgreement(n, observed, kappa, kappa - z * error, kappa + z * error, youden)


def worker_class_counts(
    items: ArrayLike,
    workers: ArrayLike,
    labels: ArrayLike,
    n_items: int,
    n_workers: int,
    n_classes: int,
) -> tuple[IntArray, FloatArray]:
    """Per worker and class: the worker's own labels, and the others' labels on the same items."""
    item_codes, worker_codes, label_codes = check_labels(
        items, workers, labels, n_items, n_workers, n_classes
    )
    others = others_on_item(item_codes, label_codes, n_items, n_classes)
    return _class_counts(worker_codes, label_codes, others, n_workers)


def _class_counts(
    workers: IntArray, labels: IntArray, others: IntArray, n_workers: int
) -> tuple[IntArray, FloatArray]:
    """``worker_class_counts`` from validated codes and ``others_on_item``."""
    k = others.shape[1]
    own = np.bincount(workers * k + labels, minlength=n_workers * k).reshape(n_workers, k)
    around = np.empty((n_workers, k))
    for label in range(k):
        around[:, label] = np.bincount(workers, weights=others[:, label], minlength=n_workers)
    return own, around


def check_durations(durations: ArrayLike, n_labels: int) -> FloatArray:
    """Return durations (one per label, NaN for unknown) as floats, or raise ValueError."""
    seconds = np.asarray(durations, dtype=np.float64)
    if seconds.shape != (n_labels,):
        raise ValueError(
            f"durations must hold one value per label ({n_labels}), got {seconds.shape}"
        )
    if np.any(seconds < 0) or np.isinf(seconds).any():
        raise ValueError("durations must be finite and not negative (NaN for unknown)")
    return seconds


def median_durations(
    workers: IntArray, durations: FloatArray, n_workers: int
) -> tuple[FloatArray, IntArray]:
    """Each worker's median known duration (NaN if none) and their number of timed labels."""
    known = ~np.isnan(durations)
    timed_workers, seconds = workers[known], durations[known]
    order = np.lexsort((seconds, timed_workers))
    seconds = seconds[order]
    n_timed = np.bincount(timed_workers, minlength=n_workers)
    start = np.cumsum(n_timed) - n_timed
    median = np.full(n_workers, np.nan)
    has = n_timed > 0
    # The two middle positions of each worker's sorted run coincide when the run is odd.
    low = start[has] + (n_timed[has] - 1) // 2
    high = start[has] + n_timed[has] // 2
    median[has] = (seconds[low] + seconds[high]) / 2.0
    return median, n_timed


def detect_random(
    agreement: ConsensusAgreement,
    *,
    min_labels: int = DEFAULTS.min_labels,
    margin: float = DEFAULTS.random_margin,
) -> BoolArray:
    """Flag workers whose agreement with the others is confidently no better than chance."""
    return (agreement.n_compared >= min_labels) & (agreement.kappa_upper <= margin)


def _normalised_entropy(counts: IntArray) -> FloatArray:
    """Entropy of each row's distribution divided by log(n_classes): 0 constant, 1 uniform."""
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = counts / totals
        terms = np.where(shares > 0, -shares * np.log(shares), 0.0)
    entropy = terms.sum(axis=1) / np.log(counts.shape[1])
    entropy[totals[:, 0] == 0] = np.nan
    return entropy


def detect_constant(
    own: IntArray,
    others: FloatArray,
    *,
    min_labels: int = DEFAULTS.min_labels,
    max_entropy: float = DEFAULTS.max_entropy,
    z: float = DEFAULTS.z,
) -> BoolArray:
    """Flag workers who (nearly) always give one class, more often than their items warrant.

    ``own`` and ``others`` are the per-worker class counts of ``worker_class_counts``: a worker
    whose items really are all of one class (per the other labellers) is not flagged.
    """
    n = own.sum(axis=1)
    rows = np.arange(n.size)
    modal = own.argmax(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        others_share = others[rows, modal] / others.sum(axis=1)
    lower, _ = wilson_interval(own[rows, modal], n, z=z)
    flat = _normalised_entropy(own) <= max_entropy
    return (n >= min_labels) & flat & (lower > others_share)


def detect_too_fast(
    median: FloatArray,
    n_timed: IntArray,
    *,
    ratio: float = DEFAULTS.too_fast_ratio,
    min_timed: int = DEFAULTS.min_timed,
) -> BoolArray:
    """Flag workers whose median duration is below ``ratio`` x the median of workers' medians.

    ``median`` and ``n_timed`` are what ``median_durations`` returns.
    """
    timed = n_timed > 0
    if not timed.any():
        return np.zeros(n_timed.size, np.bool_)
    # The median of workers' medians, so one prolific labeller cannot drag the yardstick.
    project = float(np.median(median[timed]))
    return (n_timed >= min_timed) & (median < ratio * project)


def detect_low_gold_accuracy(
    gold: GoldAccuracy,
    *,
    min_gold: int = DEFAULTS.min_gold,
    min_accuracy: float = DEFAULTS.min_gold_accuracy,
) -> BoolArray:
    """Flag workers whose gold accuracy is confidently below ``min_accuracy``."""
    return (gold.n_gold >= min_gold) & (gold.upper < min_accuracy)


@dataclass(frozen=True)
class LabellerReliability:
    """All reliability figures of every worker, and the flags raised (name -> per-worker bool)."""

    n_labels: IntArray
    expected_accuracy: FloatArray
    gold: GoldAccuracy
    agreement: ConsensusAgreement
    median_duration: FloatArray
    flags: dict[str, BoolArray]

    def flags_of(self, worker: int) -> list[str]:
        """The names of the flags raised for one worker, in a fixed order."""
        return [name for name, raised in self.flags.items() if raised[worker]]


def labeller_reliability(
    items: ArrayLike,
    workers: ArrayLike,
    labels: ArrayLike,
    n_items: int,
    n_workers: int,
    n_classes: int,
    *,
    model: DawidSkeneResult | None = None,
    gold: Gold | None = None,
    durations: ArrayLike | None = None,
    thresholds: ReliabilityThresholds = DEFAULTS,
) -> LabellerReliability:
    """Compute every worker's reliability figures and flags; see ``ReliabilityThresholds``."""
    sizes = (n_items, n_workers, n_classes)
    item_codes, worker_codes, label_codes = check_labels(items, workers, labels, *sizes)
    t = thresholds
    others = others_on_item(item_codes, label_codes, n_items, n_classes)
    own, around = _class_counts(worker_codes, label_codes, others, n_workers)
    agreement = _agreement(worker_codes, label_codes, others, n_workers, t.z)
    on_gold = gold_accuracy(item_codes, worker_codes, label_codes, *sizes, gold=gold, z=t.z)
    seconds = np.full(item_codes.size, np.nan) if durations is None else durations
    median, n_timed = median_durations(
        worker_codes, check_durations(seconds, item_codes.size), n_workers
    )
    flags = {
        "random": detect_random(agreement, min_labels=t.min_labels, margin=t.random_margin),
        "constant": detect_constant(
            own, around, min_labels=t.min_labels, max_entropy=t.max_entropy, z=t.z
        ),
        "too_fast": detect_too_fast(median, n_timed, ratio=t.too_fast_ratio, min_timed=t.min_timed),
        "low_gold_accuracy": detect_low_gold_accuracy(
            on_gold, min_gold=t.min_gold, min_accuracy=t.min_gold_accuracy
        ),
    }
    n_labels = own.sum(axis=1)
    return LabellerReliability(
        n_labels=n_labels,
        expected_accuracy=_model_accuracy(model, n_labels),
        gold=on_gold,
        agreement=agreement,
        median_duration=median,
        flags=flags,
    )


def _model_accuracy(model: DawidSkeneResult | None, n_labels: IntArray) -> FloatArray:
    """Expected accuracy under the model, NaN without a model or for workers with no labels."""
    if model is None:
        return np.full(n_labels.size, np.nan)
    if model.confusion.shape[0] != n_labels.size:
        raise ValueError("model was fitted for a different number of workers")
    accuracy = expected_accuracy(model.confusion, model.priors)
    return np.where(n_labels > 0, accuracy, np.nan)
