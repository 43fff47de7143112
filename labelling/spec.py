"""The project spec (JSON): parsing, defaults and validation, with errors that name the field."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from core.exceptions import InputError, InvalidInput
from core.text import unstorable
from labelling.policy import finite_number, unknown_field

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
MAX_LABELS = 1000
MAX_LABEL_LENGTH = 100
MAX_OVERLAP = 50

# The documented defaults of everything but `slug` and `labels`.
DEFAULTS: dict[str, Any] = {
    "threshold": 0.5,
    "instructions": "",
    "overlap": {"min": 3, "max": 5, "target_confidence": 0.95},
    "gold_rate": 0.1,
    "escalation": {"below_confidence": 0.8, "audit_fraction": 0.02, "harm_weights": {}},
    "release": {"max_class_drift": 0.1},
    "schema": {},
    # Payload fields that hold personal data: left out of releases unless asked for.
    "personal_fields": [],
    # Outside crowds (README, "Outside crowds"); `assignments` null means overlap.min.
    "crowd": {
        "reward": 0.05,
        "assignments": None,
        "title": "",
        "description": "",
        "keywords": "labelling, classification",
        "lifetime_hours": 72,
        "assignment_minutes": 10,
        "auto_approve_hours": 72,
        "min_approval_rate": 95,
        "min_approved_hits": 0,
    },
}
SCHEMA_TYPES = {"number", "integer", "string", "boolean", "object", "array"}
SCHEMA_RULE_FIELDS = {"type", "min", "max", "required"}
TOP_LEVEL_FIELDS = {"slug", "name", "labels", "positive_label", *DEFAULTS}


@dataclass(frozen=True)
class ProjectSpec:
    """A validated project spec with every default filled in."""

    slug: str
    name: str
    labels: tuple[str, ...]
    positive_label: str
    threshold: float
    instructions: str
    overlap_min: int
    overlap_max: int
    target_confidence: float
    gold_rate: float
    escalation_below_confidence: float
    crowd: dict[str, Any]
    escalation_audit_fraction: float = 0.02
    # label → how much a mistake on an item of that label costs (missing labels weigh 1).
    escalation_harm_weights: dict[str, float] | None = None
    release_max_class_drift: float = 0.1
    schema: dict[str, dict[str, Any]] | None = None
    personal_fields: tuple[str, ...] = ()

    def model_fields(self) -> dict[str, Any]:
        """The spec as Project model field values."""
        fields = asdict(self)
        fields["labels"] = list(self.labels)
        fields["escalation_harm_weights"] = dict(self.escalation_harm_weights or {})
        fields["schema"] = dict(self.schema or {})
        fields["personal_fields"] = list(self.personal_fields)
        return fields


class _Checker:
    """Collects every problem in a spec instead of stopping at the first."""

    def __init__(self) -> None:
        self.errors: list[InputError] = []

    def fail(self, field: str, reason: str) -> None:
        self.errors.append(InputError(reason=reason, field=field))

    def number(
        self, value: object, field: str, low: float, high: float, *, open_low: bool
    ) -> float:
        """A finite number within [low, high] (or (low, high] when open_low)."""
        if not finite_number(value):
            self.fail(field, f"must be a number, got {value!r}")
            return low
        if value < low or value > high or (open_low and value == low):
            bracket = "(" if open_low else "["
            self.fail(field, f"must be in {bracket}{low}, {high}], got {value}")
        return float(value)

    def integer(self, value: object, field: str, low: int, high: int) -> int:
        """A whole number within [low, high]."""
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(field, f"must be a whole number, got {value!r}")
            return low
        if not low <= value <= high:
            self.fail(field, f"must be between {low} and {high}, got {value}")
        return value

    def text(self, value: object, field: str, max_length: int) -> str:
        """A string of at most max_length characters."""
        if not isinstance(value, str):
            self.fail(field, f"must be a string, got {type(value).__name__}")
            return ""
        if len(value) > max_length:
            self.fail(field, f"must be at most {max_length} characters")
        return value

    def section(self, data: dict[str, Any], key: str, known: set[str]) -> dict[str, Any]:
        """A nested object merged over its defaults, with unknown keys reported."""
        value = data.get(key, {})
        if not isinstance(value, dict):
            self.fail(key, "must be an object")
            value = {}
        for unknown in sorted(set(value) - known):
            self.fail(
                f"{key}.{unknown}", f"{unknown_field(unknown)} (known: {', '.join(sorted(known))})"
            )
        return {**DEFAULTS[key], **value}


def _labels(check: _Checker, value: object) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < 2:
        check.fail("labels", "must be a list of at least two labels")
        return ()
    if len(value) > MAX_LABELS:
        check.fail("labels", f"must hold at most {MAX_LABELS} labels")
    labels = tuple(check.text(v, f"labels[{i}]", MAX_LABEL_LENGTH) for i, v in enumerate(value))
    if any(not label.strip() for label in labels):
        check.fail("labels", "labels must not be empty")
    if len(set(labels)) != len(labels):
        check.fail("labels", "labels must be unique")
    return labels


def _harm_weights(check: _Checker, value: object, labels: tuple[str, ...]) -> dict[str, float]:
    """escalation.harm_weights: an object of label → a weight in (0, 1000]."""
    field = "escalation.harm_weights"
    if not isinstance(value, dict):
        check.fail(field, "must be an object of label → weight")
        return {}
    for label in sorted(set(value) - set(labels)):
        check.fail(f"{field}.{label}", "is not one of the labels")
    return {
        str(label): check.number(weight, f"{field}.{label}", 0, 1000, open_low=True)
        for label, weight in value.items()
    }


def _schema_rule(check: _Checker, name: str, rule: object) -> dict[str, Any]:
    """One payload field's rule: type, min, max, required (all optional)."""
    where = f"schema.{name}"
    if not isinstance(rule, dict):
        check.fail(where, "must be an object with type, min, max, required")
        return {}
    for unknown in sorted(set(rule) - SCHEMA_RULE_FIELDS):
        check.fail(
            f"{where}.{unknown}", f"unknown field (known: {', '.join(sorted(SCHEMA_RULE_FIELDS))})"
        )
    if "type" in rule and (not isinstance(rule["type"], str) or rule["type"] not in SCHEMA_TYPES):
        check.fail(f"{where}.type", f"must be one of {', '.join(sorted(SCHEMA_TYPES))}")
    for bound in ("min", "max"):
        if bound in rule:
            check.number(rule[bound], f"{where}.{bound}", -math.inf, math.inf, open_low=False)
    if "required" in rule and not isinstance(rule["required"], bool):
        check.fail(f"{where}.required", "must be true or false")
    return dict(rule)


def _schema(check: _Checker, value: object) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        check.fail("schema", "must be an object of payload field → rule")
        return {}
    return {str(name): _schema_rule(check, str(name), rule) for name, rule in value.items()}


MAX_PERSONAL_FIELDS = 1000


def _personal_fields(check: _Checker, value: object) -> tuple[str, ...]:
    """personal_fields: the names of top-level payload fields that hold personal data."""
    if not isinstance(value, list):
        check.fail("personal_fields", "must be a list of payload field names")
        return ()
    if len(value) > MAX_PERSONAL_FIELDS:
        check.fail("personal_fields", f"must name at most {MAX_PERSONAL_FIELDS} fields")
    names = []
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name.strip():
            check.fail(f"personal_fields[{i}]", f"must be a non-empty field name, got {name!r}")
        elif len(name) > 200:
            check.fail(f"personal_fields[{i}]", "must be at most 200 characters")
        elif name in names:
            check.fail(f"personal_fields[{i}]", f"{name!r} is named twice")
        else:
            names.append(name)
    return tuple(names)


def _crowd(check: _Checker, crowd: dict[str, Any]) -> dict[str, Any]:
    """The outside-crowd settings, checked against the platforms' limits (Mechanical Turk's)."""
    out = dict(crowd)
    out["reward"] = round(
        check.number(crowd["reward"], "crowd.reward", 0.01, 100, open_low=False), 2
    )
    if crowd["assignments"] is not None:
        out["assignments"] = check.integer(
            crowd["assignments"], "crowd.assignments", 1, MAX_OVERLAP
        )
    for name, limit in (("title", 128), ("description", 2000), ("keywords", 1000)):
        out[name] = check.text(crowd[name], f"crowd.{name}", limit)
    out["lifetime_hours"] = check.integer(crowd["lifetime_hours"], "crowd.lifetime_hours", 1, 8760)
    out["assignment_minutes"] = check.integer(
        crowd["assignment_minutes"], "crowd.assignment_minutes", 1, 1440
    )
    out["auto_approve_hours"] = check.integer(
        crowd["auto_approve_hours"], "crowd.auto_approve_hours", 0, 720
    )
    out["min_approval_rate"] = check.integer(
        crowd["min_approval_rate"], "crowd.min_approval_rate", 0, 100
    )
    out["min_approved_hits"] = check.integer(
        crowd["min_approved_hits"], "crowd.min_approved_hits", 0, 1_000_000
    )
    return out


def _storable(check: _Checker, value: object, field: str) -> None:
    """Every text in the spec, names included, must be one the database can keep."""
    if isinstance(value, str):
        if (reason := unstorable(value)) is not None:
            check.fail(field, reason)
    elif isinstance(value, dict):
        for key, inner in value.items():
            where = f"{field}.{key}" if field else str(key)
            if (reason := unstorable(str(key))) is not None:
                check.fail(where, f"the name {reason}")
            _storable(check, inner, where)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            _storable(check, inner, f"{field}[{index}]")


def parse_spec(data: object) -> ProjectSpec:
    """Validate a project spec and fill in its defaults; raise InvalidInput naming every problem."""
    check = _Checker()
    if not isinstance(data, dict):
        raise InvalidInput("the project spec must be a JSON object")
    _storable(check, data, "")
    for unknown in sorted(set(data) - TOP_LEVEL_FIELDS):
        check.fail(unknown, unknown_field(unknown))
    if "slug" not in data:
        check.fail("slug", "is required")
    slug = check.text(data.get("slug", ""), "slug", 50)
    if "slug" in data and not SLUG_PATTERN.match(slug):
        check.fail(
            "slug",
            "must be 1–50 lower-case letters, digits, '-' or '_', starting with a letter or digit",
        )
    if "labels" not in data:
        check.fail("labels", "is required")
    labels = _labels(check, data.get("labels", [None, None]))
    positive = check.text(
        data.get("positive_label", labels[0] if labels else ""), "positive_label", MAX_LABEL_LENGTH
    )
    if labels and positive not in labels:
        check.fail("positive_label", f"{positive!r} is not one of the labels")
    overlap = check.section(data, "overlap", {"min", "max", "target_confidence"})
    escalation = check.section(
        data, "escalation", {"below_confidence", "audit_fraction", "harm_weights"}
    )
    release = check.section(data, "release", {"max_class_drift"})
    crowd = _crowd(check, check.section(data, "crowd", set(DEFAULTS["crowd"])))
    spec = ProjectSpec(
        slug=slug,
        name=check.text(data.get("name", slug), "name", 200) or slug,
        labels=labels,
        positive_label=positive,
        threshold=check.number(
            data.get("threshold", DEFAULTS["threshold"]), "threshold", 0, 1, open_low=True
        ),
        instructions=check.text(data.get("instructions", ""), "instructions", 100_000),
        overlap_min=check.integer(overlap["min"], "overlap.min", 1, MAX_OVERLAP),
        overlap_max=check.integer(overlap["max"], "overlap.max", 1, MAX_OVERLAP),
        target_confidence=check.number(
            overlap["target_confidence"], "overlap.target_confidence", 0, 1, open_low=True
        ),
        gold_rate=check.number(
            data.get("gold_rate", DEFAULTS["gold_rate"]), "gold_rate", 0, 1, open_low=False
        ),
        escalation_below_confidence=check.number(
            escalation["below_confidence"], "escalation.below_confidence", 0, 1, open_low=False
        ),
        escalation_audit_fraction=check.number(
            escalation["audit_fraction"], "escalation.audit_fraction", 0, 1, open_low=False
        ),
        escalation_harm_weights=_harm_weights(check, escalation["harm_weights"], labels),
        release_max_class_drift=check.number(
            release["max_class_drift"], "release.max_class_drift", 0, 1, open_low=False
        ),
        schema=_schema(check, data.get("schema", {})),
        personal_fields=_personal_fields(check, data.get("personal_fields", [])),
        crowd=crowd,
    )
    if spec.overlap_max < spec.overlap_min:
        check.fail("overlap.max", f"must be at least overlap.min ({spec.overlap_min})")
    if check.errors:
        raise InvalidInput("the project spec is invalid", errors=check.errors)
    return spec
