"""The Content-Security-Policy of every response.

Quorum's pages load scripts and styles from its own static files only (no inline script or style),
so the policy allows nothing else. Two pages need more, and say so through `csp_for`: the page
Mechanical Turk frames (framed by, and posting to, Amazon's worker sites) and the API docs
(Swagger UI, loaded from its CDN).
"""

from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"
SWAGGER_CDN = "https://cdn.jsdelivr.net"


def policy(**overrides: str) -> str:
    """The policy text: Quorum's directives, with some replaced (`frame_ancestors=…`)."""
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": settings.CSP_IMG_SRC,
        "font-src": "'self'",
        "connect-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    directives.update({name.replace("_", "-"): value for name, value in overrides.items()})
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def api_docs_policy() -> str:
    """Swagger UI: its bundle, stylesheet and images from the CDN, and the inline style block of
    drf-spectacular's page (its script is served separately, so no inline script is allowed)."""
    return policy(
        script_src=f"'self' {SWAGGER_CDN}",
        style_src=f"'self' {SWAGGER_CDN} 'unsafe-inline'",
        img_src=f"'self' data: {SWAGGER_CDN}",
    )


class ContentSecurityPolicyMiddleware:
    """Adds Quorum's policy to every response that has none of its own."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.default = policy()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if HEADER not in response:
            response[HEADER] = self.default
        return response
