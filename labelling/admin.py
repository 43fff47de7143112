"""Django admin registrations: for looking, not for deciding (decisions go through services)."""

from django.contrib import admin

from labelling.models import (
    CrowdAssignment,
    CrowdBatch,
    Item,
    Job,
    Labeller,
    Prediction,
    Project,
    QueueEntry,
    QueuePolicy,
)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "positive_label", "threshold", "created_at"]
    search_fields = ["slug", "name"]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "source", "split", "created_at", "deactivated_at"]
    list_filter = ["project", "split", "source"]
    search_fields = ["external_id", "content_hash"]


@admin.register(Prediction)
class PredictionAdmin(admin.ModelAdmin):
    list_display = ["item", "model_version", "predicted_label", "confidence", "created_at"]
    list_filter = ["model_version"]
    raw_id_fields = ["item"]


@admin.register(Labeller)
class LabellerAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "platform", "worker_id", "role", "status"]
    list_filter = ["project", "role", "status"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["pk", "project", "kind", "status", "progress", "created_at", "finished_at"]
    list_filter = ["kind", "status"]


@admin.register(QueuePolicy)
class QueuePolicyAdmin(admin.ModelAdmin):
    list_display = ["project", "version", "budget", "created_at", "created_by"]
    list_filter = ["project"]


@admin.register(QueueEntry)
class QueueEntryAdmin(admin.ModelAdmin):
    list_display = ["item", "project", "rule", "score", "model_version", "priority", "created_at"]
    list_filter = ["project", "rule"]
    raw_id_fields = ["item"]


@admin.register(CrowdBatch)
class CrowdBatchAdmin(admin.ModelAdmin):
    list_display = ["pk", "project", "platform", "status", "remote_id", "reward", "created_at"]
    list_filter = ["platform", "status"]


@admin.register(CrowdAssignment)
class CrowdAssignmentAdmin(admin.ModelAdmin):
    list_display = ["remote_id", "batch", "worker_id", "answer", "status", "decision", "applied_at"]
    list_filter = ["status", "decision"]
    raw_id_fields = ["task", "labeller", "label"]
