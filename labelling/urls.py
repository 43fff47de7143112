"""Page routes."""

from django.urls import path

from labelling import views

urlpatterns = [
    path("", views.home, name="home"),
    path("projects/<slug:slug>/", views.project_dashboard, name="project-dashboard"),
    path("projects/<slug:slug>/threshold/", views.project_threshold, name="project-threshold"),
]
