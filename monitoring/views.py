from __future__ import annotations

import asyncio
import hmac
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache

from monitoring.health import UNAVAILABLE, cached_report

log = logging.getLogger(__name__)


@never_cache
def healthz(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. Touches no dependency."""
    return HttpResponse("ok", content_type="text/plain")


@never_cache
async def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 503 only when this replica cannot serve its core path (monitoring.health).

    Everyone gets ``{"status": "ok"}`` or ``{"status": "unavailable"}`` (a degraded replica is
    ok: it serves). The report behind it (each dependency, its state, latency and error) is
    for staff users and callers with ``Authorization: Bearer <READYZ_TOKEN>``: it names
    internal hosts and versions. Checks run at most once per READYZ_CACHE_S per process.
    """
    report = await cached_report(timeout=settings.READYZ_TIMEOUT, max_age=settings.READYZ_CACHE_S)
    status = 503 if report["status"] == UNAVAILABLE else 200
    if await _may_see_detail(request):
        return JsonResponse(report, status=status)
    return JsonResponse({"status": "unavailable" if status == 503 else "ok"}, status=status)


async def _may_see_detail(request: HttpRequest) -> bool:
    token = settings.READYZ_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
    if settings.SESSION_COOKIE_NAME not in request.COOKIES or not hasattr(request, "auser"):
        return False
    try:
        # The session and user rows: bounded, and a failure (database down) just means "public".
        user = await asyncio.wait_for(request.auser(), settings.READYZ_TIMEOUT)
    except Exception:
        log.debug("readyz: could not load the user; answering the public report", exc_info=True)
        return False
    return bool(getattr(user, "is_staff", False))
