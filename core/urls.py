"""Top-level routes: pages, the REST API, its schema and docs, accounts and admin."""

from typing import Any

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.request import Request
from rest_framework.response import Response

from core import security
from core.auth import AdminLoginForm, LoginView
from core.health import healthz


class ApiDocsView(SpectacularSwaggerSplitView):
    """Swagger UI with its start-up script served apart from the page (no inline script), under
    the policy that lets it load from its CDN."""

    @extend_schema(exclude=True)
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        response = super().get(request, *args, **kwargs)
        response[security.HEADER] = security.api_docs_policy()
        return response


# The admin's log-in form counts failures like the log-in page.
admin.site.login_form = AdminLoginForm

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/login/", LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/v1/", include("labelling.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", ApiDocsView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("labelling.urls")),
]

handler404 = "core.exceptions.page_not_found"
