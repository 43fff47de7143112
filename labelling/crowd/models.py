"""Tables of outside-crowd work: batches published on a platform, their tasks and assignments."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from labelling.models import Item, Label, Labeller, Project


class CrowdBatch(models.Model):
    """Items published together on one outside platform, at one reward."""

    class Status(models.TextChoices):
        PUBLISHING = "publishing"
        OPEN = "open"
        CLOSED = "closed"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="crowd_batches")
    platform = models.CharField(max_length=30)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PUBLISHING)
    # The platform's id of the batch (a HIT type, a study) once known.
    remote_id = models.CharField(max_length=255, blank=True, default="")
    # Random and unguessable: the link-based page finds its batch by it, and MTurk's
    # UniqueRequestToken of each HIT is derived from it.
    token = models.CharField(max_length=32, unique=True)
    reward = models.DecimalField(max_digits=8, decimal_places=2)
    assignments_per_item = models.PositiveSmallIntegerField()
    # The platform's settings at publication (lifetime, durations, qualifications…).
    options = models.JSONField(default=dict, blank=True)
    cost_estimate = models.DecimalField(max_digits=12, decimal_places=2)
    # Shown to link-based workers at the end, to claim their payment on the platform.
    completion_code = models.CharField(max_length=64, blank=True, default="")
    error = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    synced_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "crowd batches"

    def __str__(self) -> str:
        return f"{self.project_id} {self.platform} batch {self.pk} ({self.status})"

    @property
    def name(self) -> str:
        """The batch name labels carry (rejecting a labeller's batch voids exactly these)."""
        return f"{self.platform}-{self.pk}"


class CrowdTask(models.Model):
    """One item of a batch: on Mechanical Turk, one HIT."""

    batch = models.ForeignKey(CrowdBatch, on_delete=models.CASCADE, related_name="tasks")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="crowd_tasks")
    remote_id = models.CharField(max_length=255, blank=True, default="")
    published_at = models.DateTimeField(null=True, blank=True)
    # Expired on the platform, then deleted once every assignment is decided.
    expired_at = models.DateTimeField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "item"], name="crowd_task_once"),
        ]
        indexes = [models.Index(fields=["remote_id"], name="crowd_task_remote")]

    def __str__(self) -> str:
        return f"task {self.pk} of batch {self.batch_id}"


class CrowdAssignment(models.Model):
    """One worker's answer for one task, and whether it is paid.

    Idempotent per platform assignment id: the framed page and the synchronisation may both see
    the same assignment, and it is recorded once.
    """

    class Status(models.TextChoices):
        # Saved by the framed page, not yet confirmed by the platform.
        RECEIVED = "received"
        # Confirmed (or, on link-based platforms, taken as given): a label exists.
        SUBMITTED = "submitted"
        APPROVED = "approved"
        REJECTED = "rejected"

    class Decision(models.TextChoices):
        NONE = ""
        PAY = "pay"
        REFUSE = "refuse"

    batch = models.ForeignKey(CrowdBatch, on_delete=models.CASCADE, related_name="assignments")
    task = models.ForeignKey(CrowdTask, on_delete=models.CASCADE, related_name="assignments")
    remote_id = models.CharField(max_length=255)
    worker_id = models.CharField(max_length=255)
    labeller = models.ForeignKey(
        Labeller, null=True, blank=True, on_delete=models.SET_NULL, related_name="assignments"
    )
    label = models.OneToOneField(
        Label, null=True, blank=True, on_delete=models.SET_NULL, related_name="assignment"
    )
    answer = models.CharField(max_length=100)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.RECEIVED)
    decision = models.CharField(
        max_length=10, choices=Decision.choices, blank=True, default=Decision.NONE
    )
    # Written for the worker: the platform shows it to them.
    feedback = models.CharField(max_length=1024, blank=True, default="")
    # When the decision reached the platform; link-based platforms: when the engineer says so.
    applied_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    bonus = models.DecimalField(max_digits=8, decimal_places=2, null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    submitted_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["batch", "remote_id"], name="crowd_assignment_once"),
            models.UniqueConstraint(fields=["task", "worker_id"], name="crowd_assignment_worker"),
        ]
        indexes = [
            models.Index(
                fields=["batch", "status"],
                condition=Q(applied_at__isnull=True),
                name="crowd_assignment_pending",
            )
        ]

    def __str__(self) -> str:
        return f"assignment {self.remote_id} ({self.status})"


class CrowdBlock(models.Model):
    """A worker blocked on the platform for clear spamming (random or constant answers)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="crowd_blocks")
    labeller = models.ForeignKey(Labeller, on_delete=models.CASCADE, related_name="crowd_blocks")
    platform = models.CharField(max_length=30)
    worker_id = models.CharField(max_length=255)
    reason = models.CharField(max_length=1024)
    applied_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["labeller"], name="crowd_block_once"),
        ]

    def __str__(self) -> str:
        return f"block {self.platform}/{self.worker_id}"
