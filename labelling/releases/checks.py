"""Data checks before a release: duplicates, train/test leakage, class drift, payload schema.

Each check gives a result with its figures and a few example external ids. A failed check blocks
the release unless the engineer overrides it with a reason, which the manifest records.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from core.exceptions import QuorumError
from labelling.releases.rows import ITEM, Selection

EXAMPLES = 5
CHECKS = ("duplicate_content", "train_test_leakage", "class_drift", "payload_schema")


@dataclass
class CheckResult:
    """The outcome of one check."""

    check: str
    passed: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    overridden: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The result as the manifest and the API show it."""
        return {
            "check": self.check,
            "passed": self.passed,
            "overridden": self.overridden,
            "message": self.message,
            "details": self.details,
        }


class ChecksFailed(QuorumError):
    """Data checks failed and were not overridden: nothing was released."""

    status_code = 409
    code = "checks_failed"

    def __init__(self, results: list[CheckResult]) -> None:
        failed = [r.check for r in results if not r.passed and not r.overridden]
        super().__init__(
            f"data checks failed: {', '.join(failed)}; fix the data, or override with a reason"
        )
        self.results = results

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "checks": [r.as_dict() for r in self.results]}

    def report(self) -> str:
        return "\n".join([self.message, *(f"  {_line(r)}" for r in self.results)])


def _line(result: CheckResult) -> str:
    verdict = "passed" if result.passed else ("overridden" if result.overridden else "FAILED")
    return f"{result.check}: {verdict}: {result.message}"


def _query(sql: str, params: list[Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def duplicate_content(chosen: Selection) -> CheckResult:
    """The same content (payload hash) more than once in the release."""
    rows = _query(
        f"SELECT i.content_hash, COUNT(*), MIN(i.external_id), MAX(i.external_id) FROM {ITEM} i "
        f"WHERE {chosen.where} GROUP BY i.content_hash HAVING COUNT(*) > 1 "
        "ORDER BY MIN(i.external_id)",
        chosen.params,
    )
    extra = sum(n - 1 for _, n, _, _ in rows)
    return CheckResult(
        "duplicate_content",
        passed=not rows,
        message=f"{len(rows)} contents appear more than once ({extra} extra rows)"
        if rows
        else "every row's content is distinct",
        details={
            "groups": len(rows),
            "extra_rows": extra,
            "examples": [[low, high] for _, _, low, high in rows[:EXAMPLES]],
        },
    )


def train_test_leakage(chosen: Selection) -> CheckResult:
    """Content of a release row found in the project under another split (train vs test…)."""
    rows = _query(
        f"SELECT i.external_id, i.split, o.external_id, o.split FROM {ITEM} i "
        f"JOIN {ITEM} o ON o.project_id = i.project_id AND o.content_hash = i.content_hash "
        "AND o.split <> '' AND o.split <> i.split AND o.deactivated_at IS NULL "
        f"WHERE {chosen.where} AND i.split <> '' ORDER BY i.external_id, o.external_id",
        chosen.params,
    )
    leaked = sorted({row[0] for row in rows})
    return CheckResult(
        "train_test_leakage",
        passed=not rows,
        message=f"{len(leaked)} rows share their content with items of another split"
        if rows
        else "no content is shared between splits",
        details={
            "rows": len(leaked),
            "examples": [
                {"external_id": a, "split": sa, "also": b, "also_split": sb}
                for a, sa, b, sb in rows[:EXAMPLES]
            ],
        },
    )


def _shares(counts: dict[str, int]) -> dict[str, float]:
    total = sum(counts.values())
    return {label: n / total for label, n in counts.items()} if total else {}


def class_drift(
    counts: dict[str, int],
    previous: dict[str, int] | None,
    previous_version: int | None,
    bound: float,
) -> CheckResult:
    """How far the class shares moved since the last comparable release (total variation)."""
    if previous is None:
        return CheckResult("class_drift", True, "no earlier release to compare with")
    now, before = _shares(counts), _shares(previous)
    labels = sorted(set(now) | set(before))
    distance = 0.5 * sum(abs(now.get(k, 0.0) - before.get(k, 0.0)) for k in labels)
    distance = round(distance, 6)
    return CheckResult(
        "class_drift",
        passed=distance <= bound,
        message=f"class shares moved by {distance:.4f} since v{previous_version} "
        f"(total variation; bound {bound})",
        details={
            "distance": distance,
            "bound": bound,
            "compared_with": previous_version,
            "shares": {k: round(now.get(k, 0.0), 6) for k in labels},
            "previous_shares": {k: round(before.get(k, 0.0), 6) for k in labels},
        },
    )


def _type_ok(kind: str | None, value: Any) -> bool:
    if kind is None:
        return True
    if kind in ("number", "integer"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return math.isfinite(value) and (kind == "number" or float(value).is_integer())
    types: dict[str, type | tuple[type, ...]] = {
        "string": str, "boolean": bool, "object": dict, "array": list,
    }  # fmt: skip
    return isinstance(value, types[kind])


class SchemaCheck:
    """Counts, row by row, the payload fields named in the project's schema that are missing,
    null, of the wrong type or out of range."""

    def __init__(self, schema: dict[str, dict[str, Any]]) -> None:
        self.schema = schema
        self.problems: Counter[tuple[str, str]] = Counter()
        self.examples: dict[tuple[str, str], list[str]] = {}

    def _fail(self, name: str, problem: str, external_id: str) -> None:
        self.problems[(name, problem)] += 1
        examples = self.examples.setdefault((name, problem), [])
        if len(examples) < EXAMPLES:
            examples.append(external_id)

    def _problem(self, rule: dict[str, Any], payload: dict[str, Any], name: str) -> str | None:
        value = payload.get(name)
        if value is None:
            if not rule.get("required", True):
                return None
            return "missing" if name not in payload else "null"
        if not _type_ok(rule.get("type"), value):
            return "wrong_type"
        numeric = isinstance(value, int | float) and not isinstance(value, bool)
        if numeric and "min" in rule and value < rule["min"]:
            return "below_min"
        if numeric and "max" in rule and value > rule["max"]:
            return "above_max"
        return None

    def __call__(self, external_id: str, payload: dict[str, Any]) -> None:
        for name, rule in self.schema.items():
            problem = self._problem(rule, payload if isinstance(payload, dict) else {}, name)
            if problem:
                self._fail(name, problem, external_id)

    def result(self) -> CheckResult:
        """The check's verdict over every row seen."""
        found = [
            {
                "field": name,
                "problem": problem,
                "rows": n,
                "examples": self.examples[(name, problem)],
            }
            for (name, problem), n in sorted(self.problems.items())
        ]
        if not self.schema:
            message = "the project has no payload schema"
        elif found:
            message = "; ".join(f"{f['field']} {f['problem']} in {f['rows']} rows" for f in found)
        else:
            message = f"{len(self.schema)} payload fields as the schema says"
        return CheckResult(
            "payload_schema", passed=not found, message=message, details={"problems": found}
        )


def apply_overrides(
    results: list[CheckResult], *, reason: str, checks: list[str] | None, user: str
) -> list[dict[str, Any]]:
    """Mark the failed checks the engineer overrode; return the overrides to record."""
    overrides = []
    for result in results:
        if result.passed or not reason or (checks is not None and result.check not in checks):
            continue
        result.overridden = True
        overrides.append({"check": result.check, "reason": reason, "by": user})
    return overrides


def blocking(results: list[CheckResult]) -> bool:
    """Whether any check failed without an override."""
    return any(not r.passed and not r.overridden for r in results)
