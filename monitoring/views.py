from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from monitoring.health import run_checks


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Touches no dependency."""
    return HttpResponse("ok", content_type="text/plain")


@never_cache
async def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: every configured dependency, concurrently, each bounded by READYZ_TIMEOUT."""
    report = await run_checks(settings.READYZ_TIMEOUT)
    return JsonResponse(report, status=200 if report["status"] == "ok" else 503)
