"""Label aggregation: majority vote and Dawid-Skene on parallel arrays of labels.

Labels arrive as three parallel integer arrays: ``items`` (codes 0..n_items-1), ``workers``
(0..n_workers-1) and ``labels`` (0..n_classes-1), one entry per answer. Every function here is a
pure function of those arrays; nothing imports Django.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

# Gold answers: {item: class}, or a pair of parallel arrays (gold items, gold classes).
Gold = Mapping[int, int] | tuple[ArrayLike, ArrayLike]


def as_codes(name: str, values: ArrayLike, n_codes: int) -> IntArray:
    """Return ``values`` as a 1-D int64 array of codes in 0..n_codes-1, or raise ValueError."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    # An empty list arrives as float64; only non-empty arrays must carry an integer dtype.
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must hold integer codes, got dtype {array.dtype}")
    codes = array.astype(np.int64, copy=False)
    if codes.size and (codes.min() < 0 or codes.max() >= n_codes):
        raise ValueError(f"{name} holds codes outside 0..{n_codes - 1}")
    return codes


def check_count(name: str, value: int, minimum: int) -> None:
    """Raise ValueError unless ``value`` is an integer of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def check_parallel(*columns: tuple[str, ArrayLike, int]) -> list[IntArray]:
    """Validate parallel code arrays given as (name, values, n_codes); return them as int64."""
    codes = [as_codes(name, values, n_codes) for name, values, n_codes in columns]
    first = columns[0][0]
    for (name, _, _), array in zip(columns[1:], codes[1:], strict=True):
        if array.shape != codes[0].shape:
            raise ValueError(
                f"{name} must have the same length as {first}, got {array.size} and {codes[0].size}"
            )
    return codes


def check_item_labels(
    items: ArrayLike, labels: ArrayLike, n_items: int, n_classes: int
) -> tuple[IntArray, IntArray]:
    """Validate parallel ``items`` and ``labels`` arrays and return them as int64 codes."""
    check_count("n_items", n_items, 0)
    check_count("n_classes", n_classes, 2)
    item_codes, label_codes = check_parallel(
        ("items", items, n_items), ("labels", labels, n_classes)
    )
    return item_codes, label_codes


def check_labels(
    items: ArrayLike,
    workers: ArrayLike,
    labels: ArrayLike,
    n_items: int,
    n_workers: int,
    n_classes: int,
) -> tuple[IntArray, IntArray, IntArray]:
    """Validate the three parallel label arrays and return them as int64 codes."""
    check_count("n_items", n_items, 0)
    check_count("n_workers", n_workers, 0)
    check_count("n_classes", n_classes, 2)
    item_codes, worker_codes, label_codes = check_parallel(
        ("items", items, n_items), ("workers", workers, n_workers), ("labels", labels, n_classes)
    )
    return item_codes, worker_codes, label_codes


def gold_arrays(gold: Gold | None, n_items: int, n_classes: int) -> tuple[IntArray, IntArray]:
    """Return gold answers as parallel (items, classes) int64 arrays, validated."""
    if gold is None:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    if isinstance(gold, Mapping):
        raw_items: ArrayLike = np.fromiter(gold.keys(), np.int64, len(gold))
        raw_classes: ArrayLike = np.fromiter(gold.values(), np.int64, len(gold))
    else:
        raw_items, raw_classes = gold
    gold_items = as_codes("gold items", raw_items, n_items)
    gold_classes = as_codes("gold classes", raw_classes, n_classes)
    if gold_items.shape != gold_classes.shape:
        raise ValueError("gold items and gold classes must have the same length")
    if np.unique(gold_items).size != gold_items.size:
        raise ValueError("gold names an item more than once")
    return gold_items, gold_classes


def label_counts(items: ArrayLike, labels: ArrayLike, n_items: int, n_classes: int) -> IntArray:
    """Count the labels of each class on each item: an n_items x n_classes matrix."""
    item_codes, label_codes = check_item_labels(items, labels, n_items, n_classes)
    flat = np.bincount(item_codes * n_classes + label_codes, minlength=n_items * n_classes)
    return flat.reshape(n_items, n_classes).astype(np.int64, copy=False)


def tie_break_rank(labels: IntArray, n_classes: int) -> IntArray:
    """Rank classes for breaking ties: most frequent in the data first, then lowest code."""
    frequency = np.bincount(labels, minlength=n_classes)
    # lexsort sorts by the last key first: descending frequency, then ascending class code.
    order = np.lexsort((np.arange(n_classes), -frequency))
    rank = np.empty(n_classes, np.int64)
    rank[order] = np.arange(n_classes)
    return rank


def majority_vote(
    items: ArrayLike, labels: ArrayLike, n_items: int, n_classes: int
) -> tuple[IntArray, FloatArray]:
    """Return each item's majority label (-1 when unlabelled) and its vote-share matrix.

    Tie rule: among the classes tied for most votes on an item, the one most frequent over the
    whole data set wins; between equally frequent classes, the lowest class code wins. Vote
    shares are an n_items x n_classes matrix whose rows sum to 1, or are all 0 for an item with
    no labels.
    """
    item_codes, label_codes = check_item_labels(items, labels, n_items, n_classes)
    counts = label_counts(item_codes, label_codes, n_items, n_classes)
    rank = tie_break_rank(label_codes, n_classes)
    # Votes dominate; the rank only separates classes with equal votes (it is < n_classes).
    key = counts * n_classes + (n_classes - 1 - rank)
    winners = key.argmax(axis=1)
    totals = counts.sum(axis=1)
    winners[totals == 0] = -1
    shares = counts / np.maximum(totals, 1)[:, None]
    return winners.astype(np.int64, copy=False), shares


@dataclass(frozen=True)
class DawidSkeneResult:
    """A fitted Dawid-Skene model.

    ``posterior`` is n_items x n_classes; ``labels`` its argmax, or -1 for an item with neither
    labels nor a gold answer (its posterior row is then the class priors). ``confusion[w, t, l]``
    is the probability that worker ``w`` answers ``l`` when the true class is ``t``.
    """

    posterior: FloatArray
    labels: IntArray
    priors: FloatArray
    confusion: FloatArray
    log_likelihood: float
    n_iter: int
    converged: bool


@dataclass(frozen=True)
class _EmData:
    """Label arrays prepared once for the EM loop: sorted by item for cache-friendly sums."""

    items: IntArray
    labels: IntArray
    worker_label: IntArray  # worker * n_classes + label, the row of a flat confusion table
    n_items: int
    n_workers: int
    n_classes: int
    informative: FloatArray  # 1.0 for items with a label or a gold answer, else 0.0
    gold_items: IntArray
    gold_log_mask: FloatArray  # n_classes x n_gold: 0 at the gold class, -inf elsewhere


def _prepare(
    items: IntArray,
    workers: IntArray,
    labels: IntArray,
    sizes: tuple[int, int, int],
    gold: tuple[IntArray, IntArray],
) -> _EmData:
    """Sort labels by item (once) and precompute the indices every EM iteration reuses."""
    n_items, n_workers, n_classes = sizes
    if items.size > 1 and np.any(items[1:] < items[:-1]):
        order = np.argsort(items, kind="stable")
        items, workers, labels = items[order], workers[order], labels[order]
    gold_items, gold_classes = gold
    informative = np.bincount(items, minlength=n_items) > 0
    informative[gold_items] = True
    mask = np.full((n_classes, gold_items.size), -np.inf)
    mask[gold_classes, np.arange(gold_items.size)] = 0.0
    return _EmData(
        items=items,
        labels=labels,
        worker_label=workers * n_classes + labels,
        n_items=n_items,
        n_workers=n_workers,
        n_classes=n_classes,
        informative=informative.astype(np.float64),
        gold_items=gold_items,
        gold_log_mask=mask,
    )


def _initial_posterior(data: _EmData) -> FloatArray:
    """Start from soft majority-vote shares (class-major); uniform if unlabelled; gold clamped."""
    _, shares = majority_vote(data.items, data.labels, data.n_items, data.n_classes)
    unlabelled = shares.sum(axis=1) == 0
    shares[unlabelled] = 1.0 / data.n_classes
    posterior = np.ascontiguousarray(shares.T)
    posterior[:, data.gold_items] = np.exp(data.gold_log_mask)
    return posterior


def _m_step(
    data: _EmData, posterior: FloatArray, smoothing: float
) -> tuple[FloatArray, FloatArray]:
    """Return log class priors and flat log confusion tables (true class x (worker, label))."""
    k = data.n_classes
    size = data.n_workers * k
    counts = np.empty((k, size))
    for true_class in range(k):
        # Soft count of (worker, label) pairs weighted by P(item is true_class).
        weights = posterior[true_class].take(data.items)
        counts[true_class] = np.bincount(data.worker_label, weights=weights, minlength=size)
    # Dirichlet smoothing keeps unseen cells finite and steadies workers with few labels.
    counts = counts.reshape(k, data.n_workers, k) + smoothing
    log_confusion = np.log(counts) - np.log(counts.sum(axis=2, keepdims=True))
    prior_mass = posterior @ data.informative + smoothing
    log_priors = np.log(prior_mass) - np.log(prior_mass.sum())
    return log_priors, log_confusion.reshape(k, size)


def _e_step(
    data: _EmData, log_priors: FloatArray, log_confusion: FloatArray
) -> tuple[FloatArray, float]:
    """Return the class-major posterior and the data log-likelihood, computed in log space."""
    logits = np.empty((data.n_classes, data.n_items))
    for true_class in range(data.n_classes):
        # Sum over each item's labels of log P(label | worker, true_class).
        per_label = log_confusion[true_class].take(data.worker_label)
        logits[true_class] = np.bincount(data.items, weights=per_label, minlength=data.n_items)
    logits += log_priors[:, None]
    # Gold answers are clamped: every other class gets probability zero.
    logits[:, data.gold_items] += data.gold_log_mask
    # logsumexp over classes, in place: this runs every iteration on n_items x n_classes.
    peak = logits.max(axis=0, initial=-np.inf)
    logits -= peak
    posterior = np.exp(logits, out=logits)
    mass = posterior.sum(axis=0)
    posterior /= mass
    return posterior, float(peak.sum() + np.log(mass).sum())


def _check_em_options(max_iter: int, tol: float, smoothing: float) -> None:
    """Raise ValueError for EM options that cannot work."""
    check_count("max_iter", max_iter, 1)
    if not tol >= 0:
        raise ValueError(f"tol must be >= 0, got {tol!r}")
    if not smoothing > 0:
        raise ValueError(
            f"smoothing must be > 0 (it keeps log-probabilities finite), got {smoothing!r}"
        )


def dawid_skene(
    items: ArrayLike,
    workers: ArrayLike,
    labels: ArrayLike,
    n_items: int,
    n_workers: int,
    n_classes: int,
    *,
    gold: Gold | None = None,
    max_iter: int = 100,
    tol: float = 1e-6,
    smoothing: float = 0.1,
) -> DawidSkeneResult:
    """Fit Dawid-Skene (one full confusion matrix per worker) by EM; gold items stay clamped.

    EM starts from soft majority-vote shares and stops when the relative change of the
    log-likelihood falls to ``tol`` or after ``max_iter`` iterations. ``smoothing`` is the
    Dirichlet pseudo-count added to every confusion cell and every class prior: 0.1 barely
    moves a worker with dozens of labels but stops one with three labels from looking perfect
    (on the published crowd data it scores at least as well as 0.01 and as crowd-kit).
    ``gold`` is {item: class} or (items, classes); those posteriors stay one-hot throughout.
    """
    item_codes, worker_codes, label_codes = check_labels(
        items, workers, labels, n_items, n_workers, n_classes
    )
    _check_em_options(max_iter, tol, smoothing)
    gold_pair = gold_arrays(gold, n_items, n_classes)
    data = _prepare(
        item_codes, worker_codes, label_codes, (n_items, n_workers, n_classes), gold_pair
    )
    return _run_em(data, max_iter=max_iter, tol=tol, smoothing=smoothing)


def _run_em(data: _EmData, *, max_iter: int, tol: float, smoothing: float) -> DawidSkeneResult:
    """Alternate M- and E-steps from the majority-vote start until the likelihood settles."""
    posterior = _initial_posterior(data)
    previous = -np.inf
    n_iter, converged = 0, False
    while n_iter < max_iter and not converged:
        n_iter += 1
        log_priors, log_confusion = _m_step(data, posterior, smoothing)
        posterior, log_likelihood = _e_step(data, log_priors, log_confusion)
        converged = abs(log_likelihood - previous) <= tol * abs(log_likelihood)
        previous = log_likelihood
    fit = (log_likelihood, n_iter, converged)
    return _result(data, posterior, log_priors, log_confusion, fit)


def _result(
    data: _EmData,
    posterior: FloatArray,
    log_priors: FloatArray,
    log_confusion: FloatArray,
    fit: tuple[float, int, bool],
) -> DawidSkeneResult:
    """Package the final EM state in item-major layout."""
    log_likelihood, n_iter, converged = fit
    k = data.n_classes
    winners = posterior.argmax(axis=0)
    winners[data.informative == 0] = -1
    return DawidSkeneResult(
        posterior=np.ascontiguousarray(posterior.T),
        labels=winners.astype(np.int64, copy=False),
        priors=np.exp(log_priors),
        confusion=np.exp(log_confusion).reshape(k, data.n_workers, k).transpose(1, 0, 2).copy(),
        log_likelihood=log_likelihood,
        n_iter=n_iter,
        converged=converged,
    )
