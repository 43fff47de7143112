"""REST API routes under /api/v1/."""

from django.urls import path

from labelling.api import loop, views

urlpatterns = [
    path(
        "projects/<slug:slug>/predictions",
        views.PredictionsImportView.as_view(),
        name="api-predictions-import",
    ),
    path("projects/<slug:slug>/queue", views.QueueView.as_view(), name="api-queue"),
    path("projects/<slug:slug>/tasks/next", loop.next_task, name="api-task-next"),
    path("leases/<int:lease_id>/label", loop.submit_label, name="api-lease-label"),
    path("leases/<int:lease_id>/skip", views.LeaseSkipView.as_view(), name="api-lease-skip"),
    path(
        "leases/<int:lease_id>/heartbeat",
        views.LeaseHeartbeatView.as_view(),
        name="api-lease-heartbeat",
    ),
    path("leases/<int:lease_id>/undo", views.LabelUndoView.as_view(), name="api-lease-undo"),
    path(
        "projects/<slug:slug>/invitations",
        views.InvitationCreateView.as_view(),
        name="api-invitation-create",
    ),
    path(
        "labellers/<int:labeller_id>/reject",
        views.LabellerRejectView.as_view(),
        name="api-labeller-reject",
    ),
    path(
        "labellers/<int:labeller_id>/approve",
        views.LabellerApproveView.as_view(),
        name="api-labeller-approve",
    ),
    path(
        "labellers/<int:labeller_id>/block",
        views.LabellerBlockView.as_view(),
        name="api-labeller-block",
    ),
    path(
        "projects/<slug:slug>/escalations",
        views.EscalationListView.as_view(),
        name="api-escalations",
    ),
    path(
        "projects/<slug:slug>/escalations/next",
        views.EscalationNextView.as_view(),
        name="api-escalation-next",
    ),
    path(
        "escalations/<int:escalation_id>/resolve",
        views.EscalationResolveView.as_view(),
        name="api-escalation-resolve",
    ),
    path("projects/<slug:slug>/releases", views.ReleasesView.as_view(), name="api-releases"),
    path("releases/<int:release_id>", views.ReleaseDetailView.as_view(), name="api-release"),
    path(
        "releases/<int:release_id>/download",
        views.ReleaseDownloadView.as_view(),
        name="api-release-download",
    ),
    path("projects/<slug:slug>/problems", views.ProblemsView.as_view(), name="api-problems"),
    path("problems/<int:problem_id>", views.ProblemUpdateView.as_view(), name="api-problem-update"),
    path(
        "projects/<slug:slug>/model-versions/<str:name>",
        views.ModelVersionUpdateView.as_view(),
        name="api-model-version-update",
    ),
    path(
        "projects/<slug:slug>/model-versions/<str:name>/monitoring",
        views.MonitoringView.as_view(),
        name="api-monitoring",
    ),
    path("jobs/<int:job_id>", views.JobDetailView.as_view(), name="api-job-detail"),
]
