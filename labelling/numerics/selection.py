"""Queue-policy selection: which eligible items a policy's rules send to people, and why.

A policy is a list of rule dicts (the public contract's queue policy), applied in order. Each rule
only sees eligible items that no earlier rule took, and filling stops when the budget is spent: a
rule that would overrun the remaining budget keeps only its best items (for the random rules, a
random subset) up to the remainder.

Rules and the score recorded for each item they take:

- ``{"rule": "near_threshold", "band": b}``: items whose ``threshold_distance`` is ``<= b``,
  closest first; score = the distance (low = near the boundary).
- ``{"rule": "uncertain", "measure": m, "top": N}`` and/or ``"above": x``: the N most uncertain
  items, or every item whose uncertainty is strictly above x (both given: those above x, at most N),
  most uncertain first; score = the measure, always oriented so that higher = more uncertain:
  ``entropy`` (nats, not normalised), ``margin`` (recorded as ``1 - (p1 - p2)``),
  ``least_confidence`` (``1 - p1``) or ``mutual_information`` (BALD; needs samples, and items
  without samples are never taken by it).
- ``{"rule": "confident", "min_confidence": c, "fraction": f}``: a uniformly random
  ``round_half_up(f * C)`` of the not-yet-taken items whose top probability is ``>= c``, where C
  counts ALL eligible items with top probability ``>= c`` (so the audit rate does not depend on
  which rules ran before); score = the top probability.
- ``{"rule": "random", "fraction": f}``: a uniformly random ``round_half_up(f * E)`` of the
  not-yet-taken items, E = the number of eligible items; score = 0.0 (the draw carries no meaning).

Ordering is deterministic: ties go to the lower row index, the random rules draw from one numpy
Generator in rule order and list what they drew in index order. ``seed`` may be an int, a
Generator (which is advanced) or None (fresh OS entropy: not reproducible). ``positive_index`` is
required only for ``near_threshold`` on a binary problem; ``budget=None`` means unlimited. Keys in
a rule dict other than the ones above are ignored (the policy layer validates the dict as a
whole), but the keys above are checked and a bad one raises ValueError naming ``rules[i].key``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from labelling.numerics.uncertainty import (
    BoolArray,
    FloatArray,
    IntArray,
    _entropy_rows,
    _mutual_information,
    _sample_counts,
    _threshold_distance,
    _top_two,
    check_index,
    check_number,
    check_probabilities,
    check_samples,
    check_threshold,
)

RULES = ("near_threshold", "uncertain", "confident", "random")
MEASURES = ("entropy", "margin", "least_confidence", "mutual_information")

# A decimal fraction times a count can land a hair below .5 (0.015 * 100 = 1.4999...); this slack
# makes such products round up as written without moving any honest non-half value.
_HALF_SLACK = 1e-9


@dataclass(frozen=True, eq=False)
class SelectionResult:
    """Items a policy queued, in queue order (rule order, then best first within a rule)."""

    indices: IntArray  # row indices into P
    rule_index: IntArray  # position in `rules` of the rule that took each item
    scores: FloatArray  # that rule's score for the item (see the module docstring)
    rule_counts: IntArray  # how many items each rule took, one entry per rule


@dataclass(frozen=True)
class _NearThreshold:
    band: float


@dataclass(frozen=True)
class _Uncertain:
    measure: str
    top: int | None
    above: float | None


@dataclass(frozen=True)
class _Confident:
    min_confidence: float
    fraction: float


@dataclass(frozen=True)
class _Random:
    fraction: float


_Rule = _NearThreshold | _Uncertain | _Confident | _Random


class _Scores:
    """Scores of the pool's rows, each computed at most once and only if a rule needs it."""

    def __init__(
        self,
        probs: FloatArray,
        samples: FloatArray | None,
        positive_index: int | None,
        threshold: float,
    ) -> None:
        self.probs = probs
        self.samples = samples
        self.positive_index = positive_index
        self.threshold = threshold

    @cached_property
    def top_two(self) -> tuple[FloatArray, FloatArray]:
        """Largest and second-largest probability per row."""
        return _top_two(self.probs)

    @cached_property
    def distance(self) -> FloatArray:
        """Distance to the decision boundary per row."""
        if self.probs.shape[1] > 2:
            first, second = self.top_two  # reuse the cached partition instead of redoing it
            return first - second
        return _threshold_distance(self.probs, self.positive_index, self.threshold)

    @cached_property
    def entropy(self) -> FloatArray:
        """Entropy in nats per row."""
        return _entropy_rows(self.probs)

    @cached_property
    def mutual_information(self) -> FloatArray:
        """BALD score per row, NaN where a row has no samples."""
        assert self.samples is not None  # select_items refuses the rule without samples
        return _mutual_information(self.samples)

    def uncertainty(self, measure: str) -> FloatArray:
        """The named uncertainty measure per row, higher = more uncertain."""
        if measure == "entropy":
            return self.entropy
        if measure == "mutual_information":
            return self.mutual_information
        first, second = self.top_two
        return 1.0 - first if measure == "least_confidence" else 1.0 - (first - second)


def select_items(
    P: ArrayLike,
    rules: Sequence[Mapping[str, Any]],
    *,
    eligible: ArrayLike | None = None,
    samples: ArrayLike | None = None,
    positive_index: int | None = None,
    threshold: float = 0.5,
    budget: int | None = None,
    seed: int | np.random.Generator | None = None,
) -> SelectionResult:
    """Apply a queue policy's rules in order to the eligible rows of P, within the budget."""
    probs = check_probabilities(P)
    n, k = probs.shape
    mask = _check_eligible(eligible, n)
    parsed = [_parse_rule(rule, i) for i, rule in enumerate(_check_rules(rules))]
    index = None if positive_index is None else check_index(positive_index, k)
    if index is None and k == 2 and any(isinstance(r, _NearThreshold) for r in parsed):
        raise ValueError("positive_index: near_threshold on a binary problem needs it")
    cut = check_threshold(threshold)
    remaining = _check_budget(budget)
    rng = _as_generator(seed)
    rows = np.flatnonzero(mask)
    # Copying the eligible rows out costs a pass over P; when most rows are eligible it is cheaper
    # to score every row and let the mask keep the others out.
    subset = rows.size * 2 < n
    pool = rows if subset else np.arange(n)
    in_pool = np.ones(rows.size, dtype=bool) if subset else mask
    pool_samples = _pool_samples(samples, parsed, mask, (n, k), rows if subset else None)
    scores = _Scores(probs[rows] if subset else probs, pool_samples, index, cut)
    return _run(parsed, scores, in_pool, remaining, rng, pool)


def _run(
    rules: list[_Rule],
    scores: _Scores,
    eligible: BoolArray,
    remaining: int | None,
    rng: np.random.Generator,
    pool: IntArray,
) -> SelectionResult:
    """Apply parsed rules over the pool's eligible rows in order, until the budget is spent."""
    free = eligible.copy()
    taken: list[IntArray] = []
    taken_scores: list[FloatArray] = []
    for rule in rules:  # one iteration per rule, never per row
        if remaining == 0:
            chosen, values = np.empty(0, dtype=np.intp), np.empty(0)
        else:
            chosen, values = _apply(rule, scores, eligible, free, remaining, rng)
        free[chosen] = False
        taken.append(chosen)
        taken_scores.append(values)
        remaining = None if remaining is None else remaining - chosen.size
    return _result(taken, taken_scores, pool)


def _result(taken: list[IntArray], values: list[FloatArray], pool: IntArray) -> SelectionResult:
    """Assemble per-rule picks (pool positions) into a result in row coordinates."""
    counts = np.array([chosen.size for chosen in taken], dtype=np.intp)
    positions = np.concatenate(taken) if taken else np.empty(0, dtype=np.intp)
    return SelectionResult(
        indices=pool[positions].astype(np.intp),
        rule_index=np.repeat(np.arange(counts.size, dtype=np.intp), counts),
        scores=np.concatenate(values) if values else np.empty(0),
        rule_counts=counts,
    )


def _apply(
    rule: _Rule,
    scores: _Scores,
    eligible: BoolArray,
    free: BoolArray,
    limit: int | None,
    rng: np.random.Generator,
) -> tuple[IntArray, FloatArray]:
    """Pool positions one rule takes, in queue order, with their scores."""
    if isinstance(rule, _NearThreshold):
        return _near_threshold(rule, scores, free, limit)
    if isinstance(rule, _Uncertain):
        return _uncertain(rule, scores, free, limit)
    if isinstance(rule, _Confident):
        return _confident(rule, scores, eligible, free, limit, rng)
    return _random(rule, eligible, free, limit, rng)


def _near_threshold(
    rule: _NearThreshold, scores: _Scores, free: BoolArray, limit: int | None
) -> tuple[IntArray, FloatArray]:
    """Free items within the band of the boundary, closest first."""
    distance = scores.distance
    candidates = np.flatnonzero(free & (distance <= rule.band))
    chosen = candidates[_best_first(distance[candidates], limit)]
    return chosen, distance[chosen]


def _uncertain(
    rule: _Uncertain, scores: _Scores, free: BoolArray, limit: int | None
) -> tuple[IntArray, FloatArray]:
    """The most uncertain free items (top N and/or above a value), most uncertain first."""
    values = scores.uncertainty(rule.measure)
    # NaN (no samples for mutual information) fails both comparisons, so it is never taken.
    wanted = values > rule.above if rule.above is not None else ~np.isnan(values)
    candidates = np.flatnonzero(free & wanted)
    cap = _min_limit(rule.top, limit)
    chosen = candidates[_best_first(-values[candidates], cap)]
    return chosen, values[chosen]


def _confident(
    rule: _Confident,
    scores: _Scores,
    eligible: BoolArray,
    free: BoolArray,
    limit: int | None,
    rng: np.random.Generator,
) -> tuple[IntArray, FloatArray]:
    """A random fraction of the eligible confident items, drawn from those still free."""
    top = scores.top_two[0]
    confident = top >= rule.min_confidence
    wanted = _round_half_up(rule.fraction * np.count_nonzero(confident & eligible))
    chosen = _draw(np.flatnonzero(free & confident), _min_limit(wanted, limit), rng)
    return chosen, top[chosen]


def _random(
    rule: _Random, eligible: BoolArray, free: BoolArray, limit: int | None, rng: np.random.Generator
) -> tuple[IntArray, FloatArray]:
    """A random fraction of all eligible items, drawn from those still free (audit)."""
    wanted = _round_half_up(rule.fraction * np.count_nonzero(eligible))
    chosen = _draw(np.flatnonzero(free), _min_limit(wanted, limit), rng)
    return chosen, np.zeros(chosen.size)


def _draw(candidates: IntArray, count: int | None, rng: np.random.Generator) -> IntArray:
    """A uniform sample without replacement of up to count candidates, in index order."""
    size = candidates.size if count is None else min(count, candidates.size)
    if size == 0:
        return np.empty(0, dtype=np.intp)  # no draw, so an empty rule leaves the stream untouched
    picks = rng.choice(candidates.size, size=size, replace=False)
    return candidates[np.sort(picks)]


def _best_first(keys: FloatArray, limit: int | None) -> IntArray:
    """Positions of the `limit` smallest keys, ordered by (key, position); all if limit is None."""
    if limit is None or limit >= keys.size:
        return np.argsort(keys, kind="stable")
    if limit == 0:
        return np.empty(0, dtype=np.intp)
    # argpartition is O(n) but picks arbitrarily among ties at the cut, so find the cut value
    # and fill with the lowest-indexed ties explicitly to keep "ties by index order".
    cut = np.partition(keys, limit - 1)[limit - 1]
    below = np.flatnonzero(keys < cut)
    ties = np.flatnonzero(keys == cut)[: limit - below.size]
    chosen = np.sort(np.concatenate([below, ties]))
    return chosen[np.argsort(keys[chosen], kind="stable")]


def _min_limit(a: int | None, b: int | None) -> int | None:
    """The smaller of two optional limits, None meaning unlimited."""
    if a is None:
        return b
    return a if b is None else min(a, b)


def _round_half_up(value: float) -> int:
    """Round a non-negative count to the nearest integer, halves upwards (2.5 -> 3, 0.4 -> 0)."""
    return math.floor(value + 0.5 + _HALF_SLACK * max(1.0, value))


def _check_eligible(eligible: ArrayLike | None, n: int) -> BoolArray:
    """The eligibility mask as a boolean array of length n (None = every row eligible)."""
    if eligible is None:
        return np.ones(n, dtype=bool)
    mask = np.asarray(eligible)
    if mask.dtype != np.bool_ or mask.shape != (n,):
        raise ValueError(f"eligible: must be a boolean array of length {n}")
    return mask


def _check_budget(budget: object) -> int | None:
    """The budget as an int >= 0, or None for unlimited."""
    if budget is None:
        return None
    if isinstance(budget, bool | np.bool_) or not isinstance(budget, int | np.integer):
        raise ValueError(f"budget: must be an integer >= 0 or None, got {budget!r}")
    if budget < 0:
        raise ValueError(f"budget: must be >= 0, got {budget}")
    return int(budget)


def _as_generator(seed: object) -> np.random.Generator:
    """A Generator from an int seed, an existing Generator (consumed, not copied) or None."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int | np.integer)):
        raise ValueError(f"seed: must be an int, a numpy Generator or None, got {seed!r}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed: must be >= 0, got {seed}")
    return np.random.default_rng(None if seed is None else int(seed))


def _check_rules(rules: object) -> Sequence[Mapping[str, Any]]:
    """The rules as a sequence of mappings."""
    if isinstance(rules, str | bytes) or not isinstance(rules, Sequence):
        raise ValueError("rules: must be a list of rule dicts")
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            raise ValueError(f"rules[{i}]: must be a dict, got {rule!r}")
    return rules


def _parse_rule(rule: Mapping[str, Any], i: int) -> _Rule:
    """One rule dict as a typed rule, or ValueError naming rules[i] and the bad field."""
    name = rule.get("rule")
    where = f"rules[{i}]"
    if name == "near_threshold":
        return _NearThreshold(band=_field(rule, "band", where, upper=math.inf))
    if name == "uncertain":
        return _parse_uncertain(rule, where)
    if name == "confident":
        return _Confident(
            min_confidence=_field(rule, "min_confidence", where),
            fraction=_field(rule, "fraction", where),
        )
    if name == "random":
        return _Random(fraction=_field(rule, "fraction", where))
    raise ValueError(f"{where}.rule: must be one of {', '.join(RULES)}, got {name!r}")


def _parse_uncertain(rule: Mapping[str, Any], where: str) -> _Uncertain:
    """An `uncertain` rule dict as a typed rule."""
    measure = rule.get("measure")
    if measure not in MEASURES:
        raise ValueError(f"{where}.measure: must be one of {', '.join(MEASURES)}, got {measure!r}")
    if "top" not in rule and "above" not in rule:
        raise ValueError(f"{where}: an uncertain rule needs `top` or `above`")
    top = rule.get("top")
    if top is not None and (isinstance(top, bool) or not isinstance(top, int | np.integer)):
        raise ValueError(f"{where}.top: must be an integer >= 0, got {top!r}")
    if top is not None and top < 0:
        raise ValueError(f"{where}.top: must be >= 0, got {top}")
    above = None if rule.get("above") is None else check_number(rule["above"], f"{where}.above")
    return _Uncertain(measure=str(measure), top=None if top is None else int(top), above=above)


def _field(rule: Mapping[str, Any], key: str, where: str, upper: float = 1.0) -> float:
    """A required numeric field in [0, upper]."""
    if key not in rule:
        raise ValueError(f"{where}.{key}: required")
    value = check_number(rule[key], f"{where}.{key}")
    if not 0.0 <= value <= upper:
        raise ValueError(f"{where}.{key}: must be in [0, {upper}], got {value}")
    return value


def _pool_samples(
    samples: ArrayLike | None,
    rules: list[_Rule],
    eligible: BoolArray,
    shape: tuple[int, int],
    rows: IntArray | None,
) -> FloatArray | None:
    """The pool's samples (rows, or all when None), checked against the rules that need them."""
    needs = [i for i, r in enumerate(rules) if getattr(r, "measure", "") == "mutual_information"]
    if samples is None:
        if needs:
            raise ValueError(f"samples: required by rules[{needs[0]}] (mutual_information)")
        return None
    checked = check_samples(samples, "samples")
    if (checked.shape[0], checked.shape[2]) != shape:
        raise ValueError(f"samples: must be n x m x k = {shape[0]} x m x {shape[1]}")
    # Zero eligible rows means nothing to select, which is not a configuration error.
    if needs and eligible.any() and not np.any(_sample_counts(checked)[eligible]):
        raise ValueError(f"samples: no eligible row has samples, which rules[{needs[0]}] needs")
    return checked if rows is None else checked[rows]
