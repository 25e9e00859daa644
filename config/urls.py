from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.urls import Resolver404, include, path, re_path, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerSplitView

from config.errors import NotFound


@csrf_exempt  # it changes nothing, and a POST to a mistyped path should say so, not fail the CSRF check
def api_not_found(request: HttpRequest) -> JsonResponse:
    """An unknown /api/ path (or a malformed id in one) answers in the API's error shape, not Django's HTML page."""
    message = "No such API endpoint (see /api/docs/)."
    if not request.path_info.endswith("/"):
        try:
            if resolve(request.path_info + "/").func is not api_not_found:
                message = f"No such API endpoint; did you mean {request.path}/ (with the trailing slash)?"
        except Resolver404:
            pass
    error = NotFound(message)
    return JsonResponse(error.as_dict(), status=error.http_status)


urlpatterns = [
    path("", include("monitoring.urls")),
    path("admin/live/", include("monitoring.admin_urls")),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's start-up script as a file: no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    path("api/redoc/", SpectacularRedocView.as_view(url_name="schema"), name="api-redoc"),
    path("api/knowledge/", include("knowledge.urls")),
    path("knowledge/", include("knowledge.page_urls")),
    path("api/gateway/", include("chat.gateway.urls")),
    path("api/", include("chat.api_urls")),
    re_path(r"^api/", api_not_found),  # last of the /api/ routes
    path("v1/", include("chat.openai_urls")),
    path("", include("chat.urls")),
]

# Django's error views, in the API's JSON shape under /api/ and /v1/ (pages keep the templates).
handler400 = "config.error_views.bad_request"
handler403 = "config.error_views.permission_denied"
handler404 = "config.error_views.page_not_found"
handler500 = "config.error_views.server_error"
