"""API input and output shapes, one pair per operation."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from labelling.importing.rows import FORMATS
from labelling.models import Job, Release
from labelling.releases.checks import CHECKS
from labelling.releases.formats import FORMATS as RELEASE_FORMATS
from labelling.services.jobs import job_live_progress


class PredictionUploadInput(serializers.Serializer):
    """A prediction file sent as multipart form data."""

    file = serializers.FileField(help_text="A .jsonl or .csv prediction file.")
    format = serializers.ChoiceField(
        choices=FORMATS, required=False, help_text="Overrides the format taken from the file name."
    )


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
    budget = serializers.IntegerField(required=False, help_text="Overrides the policy's budget.")
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


class LabelOutput(serializers.Serializer):
    """A recorded answer."""

    id = serializers.IntegerField()
    lease = serializers.IntegerField(source="lease_id")
    label = serializers.CharField(source="value")  # type: ignore[assignment]
    duration_ms = serializers.IntegerField(allow_null=True)
    created_at = serializers.DateTimeField()


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
