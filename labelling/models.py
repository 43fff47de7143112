"""The labelling domain's tables. Models hold data and constraints; decisions live in services."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from core.exceptions import Conflict
from core.models import TimestampedModel
from core.permissions import Role


class Project(TimestampedModel):
    """A labelling project: its label set, decision threshold and crowd policies."""

    slug = models.SlugField(max_length=50, unique=True)
    name = models.CharField(max_length=200)
    # The ordered label set; predictions store probabilities in this order.
    labels = models.JSONField()
    positive_label = models.CharField(max_length=100)
    threshold = models.FloatField(default=0.5)
    instructions = models.TextField(blank=True, default="")
    overlap_min = models.PositiveSmallIntegerField(default=3)
    overlap_max = models.PositiveSmallIntegerField(default=5)
    target_confidence = models.FloatField(default=0.95)
    gold_rate = models.FloatField(default=0.1)
    escalation_below_confidence = models.FloatField(default=0.8)
    # The share of auto-approved items an expert audits, drawn per item (see consensus).
    escalation_audit_fraction = models.FloatField(default=0.02, db_default=0.02)
    # label → weight of a mistake on it; an escalation's priority is scaled by it.
    escalation_harm_weights = models.JSONField(default=dict, blank=True, db_default={})
    # Payload fields a release checks: {field: {"type", "min", "max", "required"}} (spec `schema`).
    schema = models.JSONField(default=dict, blank=True, db_default={})
    # A release is blocked when its class shares moved further than this (total variation
    # distance) from the last release with the same filters (spec `release.max_class_drift`).
    release_max_class_drift = models.FloatField(default=0.1, db_default=0.1)
    # Top-level payload fields holding personal data (spec `personal_fields`): releases leave them
    # out unless the engineer asks for them, and the manifest says which it was.
    personal_fields = models.JSONField(default=list, blank=True, db_default=[])
    # Outside crowds (the spec's `crowd` block): reward, durations, qualifications…
    crowd = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Item(models.Model):
    """One thing to label: its payload as the model saw it, and where it came from."""

    # Indexed through the unique (project, external_id) constraint; a second index would only
    # slow down imports. No database-level foreign key on this and on Prediction.item: the
    # deferred per-row checks took 20 of 77 seconds of a million-row import. Rows are only
    # written by the import service, which joins on existing rows; deletes cascade in Django.
    project = models.ForeignKey(
        Project,
        on_delete=models.CASCADE,
        related_name="items",
        db_index=False,
        db_constraint=False,
    )
    external_id = models.CharField(max_length=255)
    payload = models.JSONField(default=dict)
    # sha256 of the canonical JSON of the payload: finds the same content under two ids.
    # Deliberately not indexed: checks group by it in one pass, and an index on random hashes
    # made large imports 2.5 times slower.
    content_hash = models.CharField(max_length=64)
    source = models.CharField(max_length=100, blank=True, default="")
    split = models.CharField(max_length=50, blank=True, default="")
    created_at = models.DateTimeField()
    deactivated_at = models.DateTimeField(null=True, blank=True)

    class State(models.TextChoices):
        """Where an item stands in labelling; blank until it is queued or labelled."""

        QUEUED = "queued"
        COLLECTING = "collecting"
        APPROVED = "approved"
        ESCALATED = "escalated"
        RESOLVED = "resolved"
        REMOVED = "removed"

    state = models.CharField(
        max_length=20, choices=State.choices, blank=True, default="", db_default=""
    )
    # The known answer of a gold item (import_gold); never shown to crowd labellers.
    gold_label = models.CharField(max_length=100, blank=True, default="", db_default="")
    gold_set_at = models.DateTimeField(null=True, blank=True)
    # The expert's final answer for a resolved item (its label source is then `expert`); the
    # decision itself (who, when, note) is the item's resolved Escalation.
    expert_label = models.CharField(max_length=100, blank=True, default="", db_default="")
    # When the item's decision last changed: it became approved or resolved, or the label a
    # release gives it changed while it was. Written only through decision_time (see
    # labelling/services/decisions.py); a "since the last release" release reads it.
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="item_unique_external_id"
            )
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.external_id}"


class Prediction(models.Model):
    """One model version's output for one item."""

    # Indexed through the unique (item, model_version) constraint.
    item = models.ForeignKey(
        Item,
        on_delete=models.CASCADE,
        related_name="predictions",
        db_index=False,
        db_constraint=False,
    )
    model_version = models.CharField(max_length=100)
    # Probabilities as a list in the order of the project's labels (compact, fast to load into
    # numpy); `samples` holds MC-dropout or ensemble outputs as a list of such lists.
    probabilities = models.JSONField()
    samples = models.JSONField(null=True, blank=True)
    predicted_label = models.CharField(max_length=100)
    confidence = models.FloatField()
    # Hash of probabilities and samples: re-importing the same row is recognised as unchanged.
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["item", "model_version"], name="prediction_unique_model_version"
            )
        ]

    def __str__(self) -> str:
        return f"{self.item_id}@{self.model_version}"


class ThresholdChange(models.Model):
    """A change of a project's decision threshold, and what it was based on."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="threshold_changes")
    old_threshold = models.FloatField()
    new_threshold = models.FloatField()
    # The chooser's figures at the time: rule, target, precision, recall, trusted labels used…
    basis = models.JSONField(default=dict)
    note = models.TextField(blank=True, default="")
    changed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.project_id}: {self.old_threshold} → {self.new_threshold}"


class QueuePolicy(models.Model):
    """One version of a project's queue policy: which predictions go to people, in what order."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queue_policies")
    version = models.PositiveIntegerField()
    rules = models.JSONField()
    budget = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="queue_policy_version")
        ]

    def __str__(self) -> str:
        return f"{self.project_id} policy v{self.version}"


class QueueEntry(models.Model):
    """An item selected for labelling: by which rule, with what score, under which policy."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="queue_entries")
    # One entry an item: an item already queued is never queued again.
    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="queue_entry")
    rule = models.CharField(max_length=30)
    score = models.FloatField()
    policy = models.ForeignKey(QueuePolicy, on_delete=models.PROTECT, related_name="entries")
    model_version = models.CharField(max_length=100)
    # Lower is more urgent: the order the policy's rules chose the items in.
    priority = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    # Overlap bookkeeping for leasing: the item wants `needed` labels (overlap.min, raised one at
    # a time up to overlap.max while the labels disagree); `collecting` drops when it has enough.
    needed = models.PositiveSmallIntegerField(default=3, db_default=3)
    labels_count = models.PositiveSmallIntegerField(default=0, db_default=0)
    open_leases = models.PositiveSmallIntegerField(default=0, db_default=0)
    collecting = models.BooleanField(default=True, db_default=True)

    class Meta:
        indexes = [
            models.Index(fields=["project", "priority"], name="queue_entry_priority"),
            models.Index(
                fields=["project", "priority"],
                condition=Q(collecting=True),
                name="queue_entry_collecting",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(labels_count__lte=models.F("needed")), name="queue_entry_overlap"
            )
        ]
        verbose_name_plural = "queue entries"

    def __str__(self) -> str:
        return f"{self.item_id} by {self.rule}"


class Labeller(TimestampedModel):
    """A person working on a project: a local user, or a worker of an outside crowd platform."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        REJECTED = "rejected"
        BLOCKED = "blocked"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labellers")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    # Outside workers: platform ("mturk", "import", …) and the platform's worker id.
    platform = models.CharField(max_length=50, blank=True, default="")
    worker_id = models.CharField(max_length=255, blank=True, default="")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.CROWD)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.ACTIVE)
    # Reliability figures from the last aggregation (see labelling/numerics/reliability.py).
    n_labels = models.PositiveIntegerField(default=0, db_default=0)
    accuracy = models.FloatField(null=True, blank=True)
    gold_accuracy = models.FloatField(null=True, blank=True)
    gold_answers = models.PositiveIntegerField(default=0, db_default=0)
    agreement = models.FloatField(null=True, blank=True)
    flags = models.JSONField(default=list, blank=True)
    reliability_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user"], condition=Q(user__isnull=False), name="labeller_user"
            ),
            models.UniqueConstraint(
                fields=["project", "platform", "worker_id"],
                condition=~Q(worker_id=""),
                name="labeller_worker",
            ),
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(worker_id=""), name="labeller_has_identity"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.user_id or self.platform + '/' + self.worker_id}"

    @property
    def display_name(self) -> str:
        """The name engineers know the labeller by: username, or platform worker id."""
        return self.user.username if self.user_id and self.user else self.worker_id


class QueueEpoch(models.Model):
    """A project's queue epoch: raised whenever an entry below a labeller's floor may be wanted
    again, which makes every floor of the project void (see labelling/services/floors.py)."""

    project = models.OneToOneField(
        Project, primary_key=True, on_delete=models.CASCADE, related_name="queue_epoch"
    )
    value = models.BigIntegerField(default=0, db_default=0)

    def __str__(self) -> str:
        return f"{self.project_id}: epoch {self.value}"


class QueueFloor(models.Model):
    """Where a labeller's search for work starts: every collecting entry of higher urgency (a
    lower priority) holds a lease of theirs. Valid while `epoch` is the project's queue epoch."""

    labeller = models.OneToOneField(
        Labeller, primary_key=True, on_delete=models.CASCADE, related_name="queue_floor"
    )
    priority = models.BigIntegerField()
    epoch = models.BigIntegerField()

    def __str__(self) -> str:
        return f"{self.labeller_id}: from {self.priority} (epoch {self.epoch})"


class Lease(models.Model):
    """One item lent to one labeller until it expires: the unit of crowd work."""

    class State(models.TextChoices):
        OPEN = "open"
        LABELLED = "labelled"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="leases")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="leases")
    # Indexed by lease_labeller_item (labeller first) and lease_open_by_labeller.
    labeller = models.ForeignKey(
        Labeller, on_delete=models.CASCADE, related_name="leases", db_index=False
    )
    state = models.CharField(max_length=20, choices=State.choices, default=State.OPEN)
    # A hidden gold check: it does not count towards the item's overlap.
    is_gold = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["item", "labeller"], condition=Q(state="open"), name="lease_one_open"
            )
        ]
        indexes = [
            models.Index(fields=["labeller", "item"], name="lease_labeller_item"),
            # The open lease a labeller holds, looked up before every lease.
            models.Index(
                fields=["labeller"], condition=Q(state="open"), name="lease_open_by_labeller"
            ),
            # Whether any of a project's open leases is past its expiry, asked before every
            # lease (project first: by expiry alone the planner may pick a scan of every lease
            # of the project instead), and the periodic expiry of every project's.
            models.Index(
                fields=["project", "expires_at"],
                condition=Q(state="open"),
                name="lease_open_project_expiry",
            ),
        ]

    def __str__(self) -> str:
        return f"lease {self.pk} of {self.item_id} to {self.labeller_id} ({self.state})"


class Label(models.Model):
    """One labeller's answer for one item. Never deleted: a rejected or undone label is voided."""

    class State(models.TextChoices):
        VALID = "valid"
        VOIDED = "voided"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="labels_given")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="labels")
    labeller = models.ForeignKey(Labeller, on_delete=models.CASCADE, related_name="labels")
    value = models.CharField(max_length=100)
    # Where it came from ("web", "api", "import", …) and the import or lease batch it belongs to.
    source = models.CharField(max_length=30, default="web")
    batch = models.CharField(max_length=100, blank=True, default="")
    lease = models.OneToOneField(
        Lease, null=True, blank=True, on_delete=models.SET_NULL, related_name="label"
    )
    # The client's own measure of the time spent; created_at is the server's clock (or, for
    # imported labels, the time the file gives).
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=20, choices=State.choices, default=State.VALID)
    voided_at = models.DateTimeField(null=True, blank=True)
    voided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    void_reason = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [
            # The last line of defence: no labeller ever holds two valid labels for one item.
            models.UniqueConstraint(
                fields=["item", "labeller"], condition=Q(state="valid"), name="label_once"
            )
        ]
        indexes = [
            # Covering: a release reads each item's valid labels (labeller, time) from the index
            # alone, in item order, instead of fetching three million rows scattered over the
            # table. The included columns are PostgreSQL's; SQLite builds the plain index.
            models.Index(
                fields=["project", "item"],
                include=["labeller", "created_at", "state"],
                name="label_project_item_cover",
            )
        ]

    def __str__(self) -> str:
        return f"{self.labeller_id} says {self.value} for {self.item_id}"


class Consensus(models.Model):
    """The crowd's answer for an item, from the last aggregation."""

    item = models.OneToOneField(Item, on_delete=models.CASCADE, related_name="consensus")
    label = models.CharField(max_length=100)
    # Posterior probability of the label (Dawid-Skene), and the posterior over all labels.
    confidence = models.FloatField()
    posterior = models.JSONField(default=list)
    # Share of label pairs on the item that agree.
    agreement = models.FloatField(null=True, blank=True)
    method = models.CharField(max_length=30, default="dawid-skene")
    n_labels = models.PositiveSmallIntegerField()
    computed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.item_id}: {self.label} ({self.confidence:.2f})"


class Escalation(models.Model):
    """An item the crowd could not settle, waiting for an expert, and the expert's decision."""

    class Reason(models.TextChoices):
        LOW_CONFIDENCE = "low_confidence"
        GOLD_CONFLICT = "gold_conflict"
        AUDIT = "audit"

    class Resolution(models.TextChoices):
        """What the expert decided: a final label, removal, another crowd round, a gold answer."""

        LABEL = "label"
        REMOVE = "remove"
        SEND_BACK = "send_back"
        GOLD = "gold"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="escalations")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="escalations")
    reason = models.CharField(max_length=30, choices=Reason.choices)
    # Higher is more urgent: model uncertainty and crowd disagreement, scaled by harm.
    priority = models.FloatField(default=0.0)
    created_at = models.DateTimeField(auto_now_add=True)
    # The expert reviewing it now (a lease, like crowd work), until the lease expires.
    leased_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    resolution = models.CharField(max_length=100, blank=True, default="")
    # The expert's label (label and gold resolutions), and the crowd's answer it replaced.
    label = models.CharField(max_length=100, blank=True, default="", db_default="")
    crowd_label = models.CharField(max_length=100, blank=True, default="", db_default="")
    note = models.TextField(blank=True, default="")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["item"], condition=Q(resolved_at__isnull=True), name="escalation_one_open"
            ),
            # An expert holds one open escalation of a project at a time.
            models.UniqueConstraint(
                fields=["project", "leased_to"],
                condition=Q(resolved_at__isnull=True, leased_to__isnull=False),
                name="escalation_one_held",
            ),
            models.CheckConstraint(
                condition=Q(leased_to__isnull=True, lease_expires_at__isnull=True)
                | Q(leased_to__isnull=False, lease_expires_at__isnull=False),
                name="escalation_lease_complete",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "-priority"], name="escalation_priority"),
            models.Index(
                fields=["project", "-priority", "id"],
                condition=Q(resolved_at__isnull=True),
                name="escalation_open_priority",
            ),
            models.Index(
                fields=["project", "resolved_at"],
                condition=Q(resolved_at__isnull=False),
                name="escalation_resolved",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.item_id} ({self.reason})"

    @property
    def overruled(self) -> bool | None:
        """Whether the expert's label differs from the crowd's (None: no label or no crowd)."""
        if not self.label or not self.crowd_label:
            return None
        return self.label != self.crowd_label


class LabellerDecision(models.Model):
    """The audit log of decisions about labellers: pauses, approvals, rejections, blocks."""

    class Kind(models.TextChoices):
        PAUSE = "pause"
        APPROVE = "approve"
        REJECT = "reject"
        BLOCK = "block"

    labeller = models.ForeignKey(Labeller, on_delete=models.CASCADE, related_name="decisions")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    # Blank for all of the labeller's work, else one batch of it.
    batch = models.CharField(max_length=100, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    labels_voided = models.PositiveIntegerField(default=0)
    items_reopened = models.PositiveIntegerField(default=0)
    # None when the system decided (an automatic pause by a detector).
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.kind} {self.labeller_id}"


class Invitation(models.Model):
    """A sign-up link an engineer hands to new crowd labellers of a project."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="invitations")
    token = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.CROWD)
    max_uses = models.PositiveIntegerField(default=100)
    uses = models.PositiveIntegerField(default=0)
    expires_at = models.DateTimeField()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"invitation to {self.project_id} ({self.uses}/{self.max_uses})"


class Job(TimestampedModel):
    """A background job (an import, a release…) and the progress it reports."""

    class Kind(models.TextChoices):
        IMPORT_PREDICTIONS = "import_predictions"
        QUEUE = "queue"
        RELEASE = "release"

    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=40, choices=Kind.choices)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.QUEUED)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    params = models.JSONField(default=dict)
    progress = models.FloatField(default=0.0)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"job {self.pk} {self.kind} {self.status}"


class Release(models.Model):
    """A frozen, checked, numbered export of a project's decided items. Never changed once written:
    there is no update path; a new export is the next version."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="releases")
    version = models.PositiveIntegerField()
    # {"since_last": bool, "split": str | None, "source": str | None}
    filters = models.JSONField(default=dict)
    format = models.CharField(max_length=20)
    row_count = models.PositiveIntegerField()
    class_counts = models.JSONField(default=dict)
    label_source_counts = models.JSONField(default=dict)
    # The data checks as run, each with its figures and whether it passed or was overridden.
    checks = models.JSONField(default=list)
    overrides = models.JSONField(default=list)
    sha256 = models.CharField(max_length=64)
    # Where the folder lives (file:///…/slug/v3 or s3://bucket/prefix/slug/v3) and its files.
    location = models.CharField(max_length=1000)
    data_file = models.CharField(max_length=100)
    size_bytes = models.BigIntegerField()
    code_version = models.CharField(max_length=100, blank=True, default="")
    # What "since the last release" starts from next time: {"at": the time this release's
    # snapshot began}; items decided at or after it are the next one's (releases before
    # Item.decided_at also hold the newest label id then, no longer read).
    watermark = models.JSONField(default=dict)
    manifest = models.JSONField(default=dict)
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="releases"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField()

    class Meta:
        ordering = ["project", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="release_version")
        ]

    def __str__(self) -> str:
        return f"{self.project_id} v{self.version}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # The one guard of immutability in the data model: a stored release is never rewritten.
        if not self._state.adding:
            raise Conflict(f"release {self.pk} is frozen: a new export makes the next version")
        super().save(*args, **kwargs)


class PreparedLine(models.Model):
    """A decided item's release line in one format, prepared ahead of a release (PostgreSQL).

    The whole line, as a release that leaves the project's personal fields out writes it (the
    default), written by labelling/releases/prepared.py for the `key` of the code and settings
    that wrote it; one table a format, so that a release reads only its own format's lines.
    Database triggers (migrations 0016 to 0019) delete an item's lines whenever anything they were
    built from changes, so a release takes a line only while it still says what the rows say; any
    other item's line is built by the release itself.
    """

    item = models.OneToOneField(
        Item, on_delete=models.CASCADE, primary_key=True, related_name="+", db_constraint=False
    )
    key = models.CharField(max_length=32)
    line = models.TextField()

    class Meta:
        abstract = True
        # Which items have a line of a key, read from the index alone (a release asks it of
        # every selected item; the table itself is 300–500 bytes a line).
        indexes = [models.Index(fields=["item"], include=["key"], name="%(class)s_item_key")]

    def __str__(self) -> str:
        return f"line of item {self.item_id}"


class PreparedJsonl(PreparedLine):
    """A JSON Lines release's line."""


class PreparedCsv(PreparedLine):
    """A CSV release's line."""


class PreparedManifest(PreparedLine):
    """A manifest release's line."""


class ModelVersion(models.Model):
    """A candidate model: a `model_version` seen in the project's predictions, and where it came
    from (a note, a link to its code and data, a git hash)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    name = models.CharField(max_length=100)
    # When its predictions first and last arrived: the time order of the comparison charts.
    first_seen_at = models.DateTimeField()
    last_import_at = models.DateTimeField()
    note = models.TextField(blank=True, default="")
    link = models.CharField(max_length=500, blank=True, default="")
    git_hash = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        ordering = ["first_seen_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="model_version_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.name}"


class Problem(TimestampedModel):
    """A named model bug a client reported, with example patterns (items) that show it."""

    class Status(models.TextChoices):
        OPEN = "open"
        FIXED = "fixed"
        WONT_FIX = "wont_fix"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="problems")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    # How much a mistake on this problem costs, in (0, 1000]; scales its priority.
    harm = models.FloatField(default=1.0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.OPEN)
    # Who reported it (a client, a team): free text.
    reporter = models.CharField(max_length=200, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    items = models.ManyToManyField(Item, through="ProblemItem", related_name="problems")
    # error rate of the latest evaluated model version × harm; null until it can be computed.
    priority = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="problem_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.project_id}:{self.name}"


class ProblemItem(models.Model):
    """An item that is an example pattern of a problem."""

    problem = models.ForeignKey(Problem, on_delete=models.CASCADE, related_name="links")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="problem_links")
    added_at = models.DateTimeField(default=timezone.now)
    added_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["problem", "item"], name="problem_item_once")
        ]

    def __str__(self) -> str:
        return f"{self.problem_id} ∋ {self.item_id}"


class Evaluation(models.Model):
    """A model version's figures on a problem's patterns (or, with no problem, on the project's
    test split), against the trusted labels at `computed_at` and the project threshold."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="evaluations")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="evaluations"
    )
    problem = models.ForeignKey(
        Problem, null=True, blank=True, on_delete=models.CASCADE, related_name="evaluations"
    )
    # Trusted-labelled items this version predicted, of which positive; errors = fp + fn.
    n = models.PositiveIntegerField()
    positives = models.PositiveIntegerField()
    errors = models.PositiveIntegerField()
    false_positives = models.PositiveIntegerField()
    false_negatives = models.PositiveIntegerField()
    error_rate = models.FloatField(null=True, blank=True)
    auc = models.FloatField(null=True, blank=True)
    threshold = models.FloatField()
    computed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model_version", "problem"],
                condition=Q(problem__isnull=False),
                name="evaluation_once",
            ),
            models.UniqueConstraint(
                fields=["model_version"],
                condition=Q(problem__isnull=True),
                name="evaluation_test_split_once",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_version_id} on {self.problem_id or 'test split'}"


# The outside-crowd tables live with their code; Django finds them through this module.
from labelling.crowd.models import CrowdAssignment, CrowdBatch, CrowdBlock, CrowdTask  # noqa: E402

__all__ = [
    "Consensus", "CrowdAssignment", "CrowdBatch", "CrowdBlock", "CrowdTask", "Escalation",
    "Evaluation", "Invitation", "Item", "Job", "Label", "Labeller", "LabellerDecision", "Lease",
    "ModelVersion", "Prediction", "Problem", "ProblemItem", "Project", "QueueEntry", "QueuePolicy",
    "Release", "ThresholdChange",
]  # fmt: skip
