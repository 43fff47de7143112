"""Data checks before a release: duplicates, train/test leakage, class drift, payload schema.

Each check gives a result with its figures and a few example external ids. A failed check blocks
the release unless the engineer overrides it with a reason, which the manifest records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from core.exceptions import QuorumError
from labelling.releases.rows import ITEM, Selection, bytewise

EXAMPLES = 5
# The content groups' key in content_checks(): 64 bits of the content hash, as SQL on `i`.
CONTENT_KEY = "hashtextextended(i.content_hash, 0)"
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
    content, ident = bytewise("i.content_hash"), bytewise("i.external_id")
    rows = _query(
        f"SELECT {content}, COUNT(*), MIN({ident}), MAX({ident}) FROM {ITEM} i "
        f"WHERE {chosen.where} GROUP BY {content} HAVING COUNT(*) > 1 ORDER BY 3",
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
        f"WHERE {chosen.where} AND i.split <> '' "
        f"ORDER BY {bytewise('i.external_id')}, {bytewise('o.external_id')}",
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


def content_checks(project_id: int, chosen: Selection) -> tuple[CheckResult, CheckResult]:
    """duplicate_content and train_test_leakage of the selection of project `project_id`.

    On PostgreSQL one pass over the project's active items first finds the content groups that
    could hold a duplicate or a leak, grouped by a 64-bit hash of the content hash (cheaper to
    group than the 64 hex digits): two or more selected rows, or a selected row in a group whose
    items have two splits or more. Both checks then look only at those groups' rows, by the
    content hash itself, so a hash shared by two contents changes nothing; with no such group,
    neither reads the table again.
    """
    if connection.vendor != "postgresql":
        return duplicate_content(chosen), train_test_leakage(chosen)
    key = CONTENT_KEY
    keys = _query(
        f"SELECT key FROM (SELECT {key} AS key, COUNT(*) FILTER (WHERE {chosen.where}) AS chosen, "
        """MIN(i.split COLLATE "C") FILTER (WHERE i.split <> '') AS low, """
        """MAX(i.split COLLATE "C") FILTER (WHERE i.split <> '') AS high """
        f"FROM {ITEM} i WHERE i.project_id = %s AND i.deactivated_at IS NULL GROUP BY 1) g "
        "WHERE chosen > 1 OR (chosen > 0 AND low <> high)",
        [*chosen.params, project_id],
    )
    narrowed = (
        Selection(
            f"{chosen.where} AND {key} = ANY(%s::bigint[])", [*chosen.params, [k for (k,) in keys]]
        )
        if keys
        else Selection("false")  # nothing could fail: no rows to read
    )
    return duplicate_content(narrowed), train_test_leakage(narrowed)


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


# A payload field's JSON type, as SQL on `i`, named as the schema names types ('missing' when
# the key is absent). PostgreSQL reads jsonb; SQLite its JSON functions.
def _type_sql(postgresql: bool) -> str:
    if postgresql:
        return (
            "CASE WHEN NOT (i.payload ? %s) THEN 'missing' ELSE jsonb_typeof(i.payload -> %s) END"
        )
    return (
        "CASE json_type(i.payload, %s) WHEN 'true' THEN 'boolean' WHEN 'false' THEN 'boolean' "
        "WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' WHEN 'text' THEN 'string' "
        "WHEN 'null' THEN 'null' WHEN 'array' THEN 'array' WHEN 'object' THEN 'object' "
        "ELSE 'missing' END"
    )


def _number_sql(postgresql: bool) -> str:
    return "(i.payload ->> %s)::float8" if postgresql else "json_extract(i.payload, %s)"


def _field_params(name: str, postgresql: bool) -> list[str]:
    if postgresql:
        return [name]
    return ["$." + '"' + name.replace('"', '\\"') + '"']


def _problem_sql(rule: dict[str, Any], name: str, postgresql: bool) -> tuple[str, list[Any]]:
    """SQL naming a row's problem with one schema field (or NULL), with its parameters."""
    kind, key = _type_sql(postgresql), _field_params(name, postgresql)
    type_params = key * (2 if postgresql else 1)
    number, cases, params = _number_sql(postgresql), [], []
    if rule.get("required", True):
        cases.append(f"WHEN ({kind}) IN ('missing', 'null') THEN ({kind})")
        params += type_params * 2
    else:
        cases.append(f"WHEN ({kind}) IN ('missing', 'null') THEN NULL")
        params += type_params
    wanted = rule.get("type")
    if wanted:
        json_type = "number" if wanted == "integer" else wanted
        cases.append(f"WHEN ({kind}) <> %s THEN 'wrong_type'")
        params += [*type_params, json_type]
        if wanted == "integer":
            cases.append(f"WHEN {number} <> round({number}) THEN 'wrong_type'")
            params += key * 2
    ranges, range_params = [], []
    for bound, problem, op in (("min", "below_min", "<"), ("max", "above_max", ">")):
        if bound in rule:
            ranges.append(f"WHEN {number} {op} %s THEN '{problem}'")
            range_params += [*key, rule[bound]]
    if ranges:
        # Nested, because only CASE promises not to read a non-number as a number.
        cases.append(f"WHEN ({kind}) = 'number' THEN CASE {' '.join(ranges)} END")
        params += [*type_params, *range_params]
    return f"CASE {' '.join(cases)} END", params


def payload_schema(chosen: Selection, schema: dict[str, dict[str, Any]]) -> CheckResult:
    """Payload fields named in the project's schema that are missing, null, of the wrong type
    or out of range, counted by the database in one pass a field."""
    postgresql = connection.vendor == "postgresql"
    found = []
    for name, rule in schema.items():
        problem, params = _problem_sql(rule, name, postgresql)
        rows = _query(
            f"SELECT problem, COUNT(*), MIN(external_id) FROM (SELECT {problem} AS problem, "
            f"i.external_id FROM {ITEM} i WHERE {chosen.where}) t WHERE problem IS NOT NULL "
            "GROUP BY problem ORDER BY problem",
            [*params, *chosen.params],
        )
        for kind, n, _ in rows:
            examples = _query(
                f"SELECT i.external_id FROM {ITEM} i WHERE {chosen.where} AND ({problem}) = %s "
                f"ORDER BY {bytewise('i.external_id')} LIMIT {EXAMPLES}",
                [*chosen.params, *params, kind],
            )
            found.append(
                {"field": name, "problem": kind, "rows": n, "examples": [e[0] for e in examples]}
            )
    found.sort(key=lambda f: (f["field"], f["problem"]))
    if not schema:
        message = "the project has no payload schema"
    elif found:
        message = "; ".join(f"{f['field']} {f['problem']} in {f['rows']} rows" for f in found)
    else:
        message = f"{len(schema)} payload fields as the schema says"
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
