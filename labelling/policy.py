"""Queue policies (JSON): parsing and validation, with errors that name the rule and field.

A policy lists A2I-style rules, filled in order until the budget is spent:

    {"rules": [{"rule": "near_threshold", "band": 0.1},
               {"rule": "uncertain", "measure": "entropy", "top": 2000},
               {"rule": "confident", "min_confidence": 0.97, "fraction": 0.02},
               {"rule": "random", "fraction": 0.01}],
     "budget": 5000}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, TypeGuard

from core.exceptions import InputError, InvalidInput

MEASURES = ("entropy", "margin", "least_confidence", "mutual_information")
# The policy a project uses until an engineer gives it one: the contract's example.
DEFAULT_POLICY: dict[str, Any] = {
    "rules": [
        {"rule": "near_threshold", "band": 0.1},
        {"rule": "uncertain", "measure": "entropy", "top": 2000},
        {"rule": "confident", "min_confidence": 0.97, "fraction": 0.02},
        {"rule": "random", "fraction": 0.01},
    ],
    "budget": 5000,
}
FIELDS = {
    "near_threshold": {"rule", "band"},
    "uncertain": {"rule", "measure", "top", "above"},
    "confident": {"rule", "min_confidence", "fraction"},
    "random": {"rule", "fraction"},
}


@dataclass(frozen=True)
class Policy:
    """A validated queue policy."""

    rules: tuple[dict[str, Any], ...]
    budget: int | None

    def as_json(self) -> dict[str, Any]:
        """The policy in its JSON form."""
        return {"rules": [dict(rule) for rule in self.rules], "budget": self.budget}

    def needs_samples(self) -> bool:
        """Whether a rule ranks by mutual information, which needs prediction samples."""
        return any(rule.get("measure") == "mutual_information" for rule in self.rules)


# Counts are stored as 32-bit integers (the budget's column): more would not fit, nor mean much.
MAX_COUNT = 2**31 - 1


def finite_number(value: object) -> TypeGuard[int | float]:
    """A finite number that fits a float (an integer of 400 digits does not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _count_problem(value: Any) -> str | None:
    """What is wrong with a count (a whole number from 0 to MAX_COUNT), or None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"must be a whole number ≥ 0, got {value!r}"
    return f"must be at most {MAX_COUNT}, got {value}" if value > MAX_COUNT else None


def unknown_field(name: str) -> str:
    """The reason for an unknown field; an empty name is easy to miss, so it is said."""
    return "unknown field" if name else "unknown field with an empty name"


class _RuleChecker:
    """Checks one rule, collecting its problems under `rules[i].field` names."""

    def __init__(self, errors: list[InputError], where: str) -> None:
        self.errors, self.where = errors, where

    def fail(self, key: str, reason: str) -> None:
        self.errors.append(InputError(reason, field=f"{self.where}.{key}" if key else self.where))

    def bounded(
        self, rule: dict[str, Any], key: str, low: float, high: float, open_low: bool
    ) -> None:
        value = rule.get(key)
        if value is None:
            self.fail(key, "is required")
        elif not finite_number(value):
            self.fail(key, f"must be a number, got {value!r}")
        elif value < low or value > high or (open_low and value == low):
            self.fail(key, f"must be in {'(' if open_low else '['}{low}, {high}], got {value}")

    def uncertain(self, rule: dict[str, Any]) -> None:
        if rule.get("measure") not in MEASURES:
            self.fail(
                "measure", f"must be one of {', '.join(MEASURES)}, got {rule.get('measure')!r}"
            )
        if "top" not in rule and "above" not in rule:
            self.fail("", "an uncertain rule needs `top` (how many) or `above` (a score)")
        if "top" in rule and (problem := _count_problem(rule["top"])) is not None:
            self.fail("top", problem)
        if "above" in rule and not finite_number(rule["above"]):
            self.fail("above", f"must be a number, got {rule['above']!r}")

    def check(self, rule: Any) -> None:
        if not isinstance(rule, dict):
            self.fail("", "must be an object with a `rule` field")
            return
        name = rule.get("rule")
        if not isinstance(name, str) or name not in FIELDS:
            self.fail("rule", f"unknown rule {name!r}: use one of {', '.join(FIELDS)}")
            return
        for unknown in sorted(set(rule) - FIELDS[name]):
            self.fail(
                unknown, f"is not a field of the {name} rule" if unknown else unknown_field("")
            )
        if name == "near_threshold":
            self.bounded(rule, "band", 0, 0.5, open_low=True)
        elif name == "uncertain":
            self.uncertain(rule)
        else:
            if name == "confident":
                self.bounded(rule, "min_confidence", 0, 1, open_low=False)
            self.bounded(rule, "fraction", 0, 1, open_low=False)


def parse_policy(data: Any, *, budget: int | None = None) -> Policy:
    """Validate a policy; `budget` (from --budget) overrides the policy's own."""
    errors: list[InputError] = []
    if not isinstance(data, dict):
        raise InvalidInput("the queue policy must be a JSON object with `rules`")
    for unknown in sorted(set(data) - {"rules", "budget"}):
        errors.append(InputError(f"{unknown_field(unknown)} (known: budget, rules)", field=unknown))
    rules = data.get("rules")
    if not isinstance(rules, list) or not rules:
        errors.append(InputError("must be a non-empty list of rules", field="rules"))
        rules = []
    for i, rule in enumerate(rules):
        _RuleChecker(errors, f"rules[{i}]").check(rule)
    chosen = budget if budget is not None else data.get("budget")
    if chosen is not None and (problem := _count_problem(chosen)) is not None:
        errors.append(InputError(problem, field="budget"))
    if errors:
        raise InvalidInput("the queue policy is invalid", errors=errors)
    return Policy(rules=tuple(dict(rule) for rule in rules), budget=chosen)
