"""Page routes."""

from django.urls import path

from labelling.views import batches, crowd, engineer, outside, problems, review, team

urlpatterns = [
    path("", engineer.home, name="home"),
    path("projects/<slug:slug>/", engineer.project_dashboard, name="project-dashboard"),
    path("projects/<slug:slug>/threshold/", engineer.project_threshold, name="project-threshold"),
    path("projects/<slug:slug>/releases/", engineer.project_releases, name="project-releases"),
    path("projects/<slug:slug>/problems/", problems.problems_page, name="project-problems"),
    path("projects/<slug:slug>/labellers/", team.project_labellers, name="project-labellers"),
    path(
        "projects/<slug:slug>/labellers/<int:labeller_id>/",
        team.labeller_detail,
        name="labeller-detail",
    ),
    path("label/<slug:slug>/", crowd.label_page, name="label-page"),
    path("review/<slug:slug>/", review.review_page, name="review-page"),
    path("join/<str:token>/", team.join, name="join"),
    path("projects/<slug:slug>/crowd/", batches.project_crowd, name="project-crowd"),
    path("ext/mturk/<slug:slug>/", outside.mturk_task, name="ext-mturk"),
    path("ext/link/<slug:slug>/<str:token>/", outside.link_task, name="ext-link"),
]
