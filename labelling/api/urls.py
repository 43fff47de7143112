"""REST API routes under /api/v1/."""

from django.urls import path

from labelling.api import views

urlpatterns = [
    path(
        "projects/<slug:slug>/predictions",
        views.PredictionsImportView.as_view(),
        name="api-predictions-import",
    ),
    path("projects/<slug:slug>/queue", views.QueueView.as_view(), name="api-queue"),
    path("jobs/<int:job_id>", views.JobDetailView.as_view(), name="api-job-detail"),
]
