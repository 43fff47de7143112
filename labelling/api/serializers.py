"""API input and output shapes, one pair per operation."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError
from rest_framework import serializers

from core.exceptions import QuorumError
from labelling.importing.rows import FORMATS
from labelling.models import Job, Release
from labelling.policy import MAX_COUNT
from labelling.releases.checks import CHECKS
from labelling.releases.formats import FORMATS as RELEASE_FORMATS
from labelling.services.jobs import job_live_progress

logger = logging.getLogger("quorum.errors")


class PredictionUploadInput(serializers.Serializer):
    """A prediction file sent as multipart form data."""

    file = serializers.FileField(help_text="A .jsonl or .csv prediction file.")
    format = serializers.ChoiceField(
        choices=FORMATS, required=False, help_text="Overrides the format taken from the file name."
    )


# One prediction row as the JSON list of an import carries it (the JSON Lines row of the contract).
PREDICTION_ROW_SCHEMA = {
    "type": "object",
    "properties": {
        "external_id": {"type": "string", "minLength": 1, "maxLength": 255},
        "payload": {"type": "object"},
        "model_version": {"type": "string", "minLength": 1, "maxLength": 100},
        "probabilities": {
            "type": "object",
            "description": "label: probability, for every label of the project, summing to 1",
            "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "samples": {
            "type": "array",
            "description": "MC-dropout or ensemble outputs: probability lists in label order",
            "minItems": 1,
            "maxItems": 1000,
            "items": {"type": "array", "items": {"type": "number", "minimum": 0, "maximum": 1}},
        },
        "source": {"type": "string", "maxLength": 100},
        "split": {"type": "string", "maxLength": 50},
    },
    "required": ["external_id", "payload", "model_version", "probabilities"],
    "additionalProperties": False,
}


class ImportResultOutput(serializers.Serializer):
    """The counts of a finished import."""

    rows = serializers.IntegerField()
    new_items = serializers.IntegerField()
    new_predictions = serializers.IntegerField()
    unchanged = serializers.IntegerField()


class JobOutput(serializers.ModelSerializer):
    """A background job and its progress (0 to 1)."""

    progress = serializers.SerializerMethodField()
    project = serializers.CharField(source="project.slug", read_only=True)
    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "url",
            "project",
            "kind",
            "status",
            "progress",
            "result",
            "error",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_progress(self, job: Job) -> float:
        return round(job_live_progress(job), 4)

    def get_url(self, job: Job) -> str:
        return f"/api/v1/jobs/{job.pk}"


# A refused request: what was wrong and, for files, where. (A schema, not a serializer:
# `errors` would clash with Serializer.errors.)
ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "line": {"type": "integer", "nullable": True},
                    "field": {"type": "string"},
                    "reason": {"type": "string"},
                },
            },
        },
        "total_errors": {"type": "integer"},
    },
    "required": ["detail", "code"],
}


class QueueInput(serializers.Serializer):
    """Queue the predictions that need people; every field is optional."""

    policy = serializers.JSONField(
        required=False, help_text="A queue policy; stored as the project's next version."
    )
    budget = serializers.IntegerField(
        required=False, min_value=0, max_value=MAX_COUNT, help_text="Overrides the policy's budget."
    )
    model_version = serializers.CharField(
        required=False, max_length=100, help_text="Default: the latest imported model version."
    )


class RuleCountOutput(serializers.Serializer):
    rule = serializers.CharField()
    queued = serializers.IntegerField()


class QueueResultOutput(serializers.Serializer):
    """What a queue run did."""

    policy_version = serializers.IntegerField()
    model_version = serializers.CharField()
    considered = serializers.IntegerField()
    queued = serializers.IntegerField()
    by_rule = RuleCountOutput(many=True)
    crossed_threshold = serializers.ListField(
        child=serializers.CharField(),
        help_text="Already queued items whose prediction under this model version falls on "
        "the other side of the threshold.",
    )


class TaskItemOutput(serializers.Serializer):
    """What a labeller sees of an item: its id and payload, nothing else."""

    external_id = serializers.CharField()
    payload = serializers.JSONField()


class TaskOutput(serializers.Serializer):
    """A leased item to label."""

    lease = serializers.IntegerField(source="pk")
    item = TaskItemOutput()
    labels = serializers.ListField(child=serializers.CharField(), source="project.labels")
    instructions = serializers.CharField(source="project.instructions")
    expires_at = serializers.DateTimeField()


class LabelInput(serializers.Serializer):
    """An answer for a leased item."""

    label = serializers.CharField(max_length=100)  # type: ignore[assignment]
    duration_ms = serializers.IntegerField(
        required=False,
        allow_null=True,
        min_value=0,
        max_value=24 * 3600 * 1000,
        help_text="Time the labeller spent, as measured by the client.",
    )
    next = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also lease this labeller's next item and return it as `next`, saving the "
        "separate tasks/next call.",
    )


class LabelOutput(serializers.Serializer):
    """A recorded answer."""

    id = serializers.IntegerField()
    lease = serializers.IntegerField(source="lease_id")
    label = serializers.CharField(source="value")  # type: ignore[assignment]
    duration_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


class NextErrorOutput(serializers.Serializer):
    """Why no next item could be leased after an answer (the answer itself is stored)."""

    status = serializers.IntegerField(help_text="The status tasks/next would have answered.")
    detail = serializers.CharField()
    code = serializers.CharField()


class LabelAndNextOutput(LabelOutput):
    """A recorded answer; with `"next": true` in the request, also the labeller's next item."""

    next = TaskOutput(
        required=False,
        allow_null=True,
        help_text="Only when asked for: the next item, as tasks/next gives it; null when nothing "
        "is left for this labeller or when `next_error` says why none could be leased.",
    )
    next_error = NextErrorOutput(required=False)


# The labelling loop writes these two bodies for every answer; building them through DRF's field
# machinery costs more than the rest of the answer. The same bodies as plain dicts (a test holds
# them equal to TaskOutput's and LabelOutput's):
_TIME = serializers.DateTimeField()


def task_body(lease: Any) -> dict[str, Any]:
    """TaskOutput(lease).data."""
    item, project = lease.item, lease.project
    return {
        "lease": lease.pk,
        "item": {"external_id": str(item.external_id), "payload": item.payload},
        "labels": [str(label) for label in project.labels],
        "instructions": str(project.instructions),
        "expires_at": _TIME.to_representation(lease.expires_at),
    }


def label_body(label: Any) -> dict[str, Any]:
    """LabelOutput(label).data."""
    return {
        "id": label.pk,
        "lease": label.lease_id,
        "label": str(label.value),
        "duration_ms": label.duration_ms,
        "created_at": _TIME.to_representation(label.created_at),
    }


def next_body(take: Callable[[], Any]) -> dict[str, Any]:
    """The `next` part of an answer that asked for the next item: what `take` leased (a lease
    or None) as tasks/next gives it, or null and the error tasks/next would have answered. The
    answer is stored by then, so a database error here is not the request's: it is reported as
    the next item's (no transaction is open around `take` on either path)."""
    try:
        lease = take()
    except QuorumError as error:
        return {"next": None, "next_error": {"status": error.status_code, **error.as_dict()}}
    except DatabaseError:
        logger.exception("an answer was stored but its next item could not be leased")
        return {"next": None, "next_error": {"status": 503, **NEXT_NOT_LEASED}}
    return {"next": None if lease is None else task_body(lease)}


NEXT_NOT_LEASED = {
    "detail": "your answer was saved, but the next item could not be leased: ask tasks/next",
    "code": "next_not_leased",
}


class LeaseOutput(serializers.Serializer):
    """A lease's state and expiry."""

    lease = serializers.IntegerField(source="pk")
    state = serializers.CharField()
    expires_at = serializers.DateTimeField()


class InvitationInput(serializers.Serializer):
    """A sign-up link to create."""

    role = serializers.ChoiceField(choices=["crowd", "expert"], default="crowd")
    max_uses = serializers.IntegerField(default=100, min_value=1, max_value=100_000)
    days = serializers.IntegerField(default=14, min_value=1, max_value=365)


class InvitationOutput(serializers.Serializer):
    """A sign-up link: hand its URL to the people who should join."""

    url = serializers.SerializerMethodField()
    role = serializers.CharField()
    max_uses = serializers.IntegerField()
    uses = serializers.IntegerField()
    expires_at = serializers.DateTimeField()

    def get_url(self, invitation: Any) -> str:
        return f"/join/{invitation.token}/"


class DecisionInput(serializers.Serializer):
    """A decision about a labeller: why, and for a rejection optionally one batch only."""

    reason = serializers.CharField(required=False, allow_blank=True, max_length=2000, default="")
    batch = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=100,
        default="",
        help_text="Reject only this batch of the labeller's labels (blank: all of them).",
    )


class DecisionOutput(serializers.Serializer):
    """A recorded decision about a labeller."""

    labeller = serializers.IntegerField(source="labeller_id")
    status = serializers.CharField(source="labeller.status")
    kind = serializers.CharField()
    batch = serializers.CharField()
    reason = serializers.CharField()
    labels_voided = serializers.IntegerField()
    items_reopened = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class EscalationQueryInput(serializers.Serializer):
    """Which escalations to list: one reason or all, and a page of them."""

    reason = serializers.ChoiceField(
        choices=["low_confidence", "gold_conflict", "audit"], required=False
    )
    limit = serializers.IntegerField(default=50, min_value=1, max_value=500)
    offset = serializers.IntegerField(default=0, min_value=0, max_value=10**9)


class EscalationNextInput(serializers.Serializer):
    """Lease the next escalation, of one reason or any."""

    reason = serializers.ChoiceField(
        choices=["low_confidence", "gold_conflict", "audit"], required=False
    )


class ReviewItemOutput(serializers.Serializer):
    """The item as the expert sees it: what labellers see, its state and gold answer."""

    external_id = serializers.CharField()
    payload = serializers.JSONField()
    state = serializers.CharField()
    gold_label = serializers.CharField()


class ReviewPredictionOutput(serializers.Serializer):
    """The model's latest prediction for the item."""

    model_version = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    confidence = serializers.FloatField()
    probabilities = serializers.DictField(child=serializers.FloatField(), allow_null=True)


class ReviewConsensusOutput(serializers.Serializer):
    """The crowd's consensus: its answer and the posterior over every label."""

    label = serializers.CharField()  # type: ignore[assignment]
    confidence = serializers.FloatField()
    posterior = serializers.DictField(child=serializers.FloatField(), allow_null=True)
    agreement = serializers.FloatField(allow_null=True)
    n_labels = serializers.IntegerField()
    method = serializers.CharField()


class ReliabilityOutput(serializers.Serializer):
    """A labeller's reliability figures from the last aggregation."""

    n_labels = serializers.IntegerField()
    accuracy = serializers.FloatField(allow_null=True)
    gold_accuracy = serializers.FloatField(allow_null=True)
    agreement = serializers.FloatField(allow_null=True)
    flags = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()


class CrowdLabelOutput(serializers.Serializer):
    """One crowd label of the item, with its labeller's reliability."""

    labeller_id = serializers.IntegerField()
    labeller = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    created_at = serializers.DateTimeField()
    duration_ms = serializers.IntegerField(allow_null=True)
    reliability = ReliabilityOutput()


class NoteOutput(serializers.Serializer):
    """An earlier expert decision on the item."""

    at = serializers.DateTimeField()
    by = serializers.CharField()
    reason = serializers.CharField()
    resolution = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    note = serializers.CharField()


class EscalationOutput(serializers.Serializer):
    """An escalation and the evidence an expert decides it on."""

    id = serializers.IntegerField(source="escalation.pk")
    reason = serializers.CharField(source="escalation.reason")
    priority = serializers.FloatField(source="escalation.priority")
    created_at = serializers.DateTimeField(source="escalation.created_at")
    leased_to = serializers.CharField(
        source="escalation.leased_to.username", allow_null=True, default=None
    )
    lease_expires_at = serializers.DateTimeField(
        source="escalation.lease_expires_at", allow_null=True
    )
    item = ReviewItemOutput()
    labels = CrowdLabelOutput(many=True)
    prediction = ReviewPredictionOutput(allow_null=True)
    consensus = ReviewConsensusOutput(allow_null=True)
    notes = NoteOutput(many=True)


class EscalationListOutput(serializers.Serializer):
    """A page of the escalation queue, most urgent first."""

    count = serializers.IntegerField()
    next = serializers.CharField(allow_null=True)
    results = EscalationOutput(many=True)


class ResolveInput(serializers.Serializer):
    """An expert's decision: `{"label": …}` sets the final label; `action` says otherwise."""

    action = serializers.ChoiceField(
        choices=["label", "remove", "send_back", "gold"],
        required=False,
        help_text="label (default when `label` is given), remove, send_back (needs a note), "
        "gold (needs a label: the item becomes a gold check).",
    )
    label = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")  # type: ignore[assignment]
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if "action" not in data:
            if not data["label"]:
                raise serializers.ValidationError(
                    {"label": "give the final label, or an action (remove, send_back, gold)"}
                )
            data["action"] = "label"
        return data


class ResolvedItemOutput(serializers.Serializer):
    external_id = serializers.CharField()
    state = serializers.CharField()


class ResolveOutput(serializers.Serializer):
    """A recorded expert decision."""

    id = serializers.IntegerField()
    reason = serializers.CharField()
    resolution = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    label_source = serializers.SerializerMethodField()
    crowd_label = serializers.CharField()
    overruled = serializers.BooleanField(allow_null=True)
    note = serializers.CharField()
    resolved_by = serializers.CharField(source="resolved_by.username")
    resolved_at = serializers.DateTimeField()
    item = ResolvedItemOutput()

    def get_label_source(self, escalation: Any) -> str | None:
        return "expert" if escalation.label else None


class ReleaseInput(serializers.Serializer):
    """What to release: format, filters, and an override of failed checks with its reason."""

    format = serializers.ChoiceField(choices=RELEASE_FORMATS, default="jsonl")
    since_last = serializers.BooleanField(
        default=False, help_text="Only items decided since the last release."
    )
    split = serializers.CharField(required=False, allow_null=True, max_length=50, default=None)
    source = serializers.CharField(required=False, allow_null=True, max_length=100, default=None)  # type: ignore[assignment]
    override_reason = serializers.CharField(
        required=False,
        allow_blank=True,
        default="",
        max_length=2000,
        help_text="Release even though data checks fail; recorded in the manifest.",
    )
    override_checks = serializers.ListField(
        child=serializers.ChoiceField(choices=CHECKS),
        required=False,
        allow_null=True,
        default=None,
        help_text="The checks the override applies to (default: every failed check).",
    )
    include_personal = serializers.BooleanField(
        default=False,
        help_text="Keep the payload fields the project marks personal (left out by default); "
        "the manifest records the choice.",
    )


class ReleaseOutput(serializers.ModelSerializer):
    """A release: its manifest figures and where to download its data file."""

    project = serializers.CharField(source="project.slug", read_only=True)
    url = serializers.SerializerMethodField()
    download_url = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = Release
        fields = [
            "id",
            "url",
            "project",
            "version",
            "format",
            "filters",
            "row_count",
            "class_counts",
            "label_source_counts",
            "checks",
            "overrides",
            "sha256",
            "size_bytes",
            "location",
            "data_file",
            "code_version",
            "created_by",
            "created_at",
            "job",
            "download_url",
        ]

    def get_url(self, release: Release) -> str:
        return f"/api/v1/releases/{release.pk}"

    def get_download_url(self, release: Release) -> str:
        return str(self.context.get("download_urls", {}).get(release.pk, ""))

    def get_created_by(self, release: Release) -> str:
        return release.created_by.get_username() if release.created_by else ""


class ReleaseDetailOutput(ReleaseOutput):
    """A release with its whole manifest."""

    class Meta(ReleaseOutput.Meta):
        fields = [*ReleaseOutput.Meta.fields, "manifest"]


class ProblemInput(serializers.Serializer):
    """A problem to create or change; the service checks each field and names the bad ones."""

    name = serializers.JSONField(required=False, help_text="Unique in the project (required).")
    description = serializers.JSONField(required=False)
    harm = serializers.JSONField(required=False, help_text="Harm factor in (0, 1000]; default 1.")
    status = serializers.JSONField(required=False, help_text="open, fixed or wont_fix.")
    reporter = serializers.JSONField(required=False, help_text="Who reported it (free text).")
    items = serializers.JSONField(
        required=False, help_text="External ids of existing items to link as patterns."
    )
    patterns = serializers.JSONField(
        required=False,
        help_text='New patterns, `[{"external_id": "…", "payload": {…}}]`: created as items and '
        "queued for labelling.",
    )
    remove_items = serializers.JSONField(
        required=False, help_text="External ids of patterns to unlink (update only)."
    )


class FiguresOutput(serializers.Serializer):
    """A model version's figures on a problem at the project threshold."""

    n = serializers.IntegerField(help_text="Trusted-labelled patterns the version predicted.")
    positives = serializers.IntegerField()
    errors = serializers.IntegerField()  # type: ignore[assignment]
    false_positives = serializers.IntegerField()
    false_negatives = serializers.IntegerField()
    error_rate = serializers.FloatField(allow_null=True)
    auc = serializers.FloatField(allow_null=True, help_text="Null unless both classes occur.")


class ProblemOutput(serializers.Serializer):
    """A problem with each model version's figures, by version name."""

    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    status = serializers.CharField()
    harm = serializers.FloatField()
    reporter = serializers.CharField()
    priority = serializers.FloatField(allow_null=True, help_text="error rate × harm")
    n_items = serializers.IntegerField(allow_null=True)
    figures = serializers.DictField(child=FiguresOutput())


class ModelVersionOutput(serializers.Serializer):
    """A candidate model and where it came from."""

    name = serializers.CharField()
    first_seen_at = serializers.CharField()
    last_import_at = serializers.CharField()
    note = serializers.CharField()
    link = serializers.CharField()
    git_hash = serializers.CharField()


class ComparisonOutput(serializers.Serializer):
    """A candidate against the deployed model on the problems of at least `min_harm`."""

    candidate = serializers.CharField()
    deployed = serializers.CharField()
    min_harm = serializers.FloatField()
    passed = serializers.BooleanField()
    worse = serializers.ListField(child=serializers.DictField())
    missing = serializers.ListField(child=serializers.DictField())


class ProblemsReportOutput(serializers.Serializer):
    """Every problem, highest priority first, with each model version's figures."""

    project = serializers.CharField()
    threshold = serializers.FloatField()
    positive_label = serializers.CharField()
    computed_at = serializers.CharField(allow_null=True)
    model_versions = ModelVersionOutput(many=True)
    problems = ProblemOutput(many=True)
    test_split = serializers.DictField(child=FiguresOutput())
    comparison = ComparisonOutput(required=False)


class ProblemsQueryInput(serializers.Serializer):
    """Optionally compare a candidate with the deployed model."""

    candidate = serializers.CharField(required=False, max_length=100)
    deployed = serializers.CharField(required=False, max_length=100)
    min_harm = serializers.FloatField(required=False, default=0.0, min_value=0)

    def validate(self, data: dict[str, Any]) -> dict[str, Any]:
        if ("candidate" in data) != ("deployed" in data):
            raise serializers.ValidationError({"deployed": "candidate and deployed go together"})
        return data


class ProblemSavedOutput(serializers.Serializer):
    """A created or changed problem, and how many new patterns were queued for labelling."""

    problem = ProblemOutput()
    queued = serializers.IntegerField()


class ModelVersionInput(serializers.Serializer):
    """Describe a candidate model; omitted fields stay as they are."""

    note = serializers.JSONField(required=False)
    link = serializers.JSONField(required=False, help_text="Where its code and data are.")
    git_hash = serializers.JSONField(required=False)
