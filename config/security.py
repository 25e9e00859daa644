"""Response headers the browser enforces: the Content-Security-Policy (the rest is Django's SecurityMiddleware).

The policy (CONTENT_SECURITY_POLICY) lets scripts come only from this origin: no inline
script or event handler, no CDN. An answer that slipped markup past the sanitiser
(chat/markdown.py) still could not run script. The API docs pages are the one exception:
Swagger UI and Redoc are served by drf-spectacular from a CDN (pinned versions), so those
two paths also allow that CDN (DOCS_CSP), and nothing else does.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.deprecation import MiddlewareMixin

# drf-spectacular's Swagger UI / Redoc assets (SPECTACULAR_SETTINGS pins the versions).
DOCS_CDN = "https://cdn.jsdelivr.net"
DOCS_PATHS = ("/api/docs/", "/api/redoc/")


def docs_policy(policy: str) -> str:
    """``policy`` with the docs CDN added to the script, style, image and font sources."""
    out = []
    for directive in policy.split(";"):
        name = directive.strip().split(" ", 1)[0]
        if name in ("script-src", "style-src", "img-src", "font-src", "connect-src"):
            directive = f"{directive.strip()} {DOCS_CDN}"
        out.append(directive.strip())
    return "; ".join(d for d in out if d)


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Adds ``Content-Security-Policy`` to every response that has none (sync and async alike)."""

    def process_response(self, request: Any, response: Any) -> Any:
        policy = settings.CONTENT_SECURITY_POLICY
        if policy and "Content-Security-Policy" not in response:
            if request.path.startswith(DOCS_PATHS):
                policy = docs_policy(policy)
            response["Content-Security-Policy"] = policy
        return response
