"""Live figures in Django admin: a page of small charts and the JSON snapshot it polls.

Both are plain views; config/urls.py wraps them in ``admin.site.admin_view`` (staff only,
others are sent to the admin login). They only render ``dashboard.current_figures()``.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache

from monitoring.dashboard import current_figures

POLL_INTERVAL_S = 5
HISTORY_POINTS = 60  # 5 minutes at the poll interval


@never_cache
def live_page(request: HttpRequest) -> HttpResponse:
    context = {
        **admin.site.each_context(request),
        "title": _("Live figures"),
        "figures_url": reverse("monitoring-live-figures"),
        "poll_interval_s": POLL_INTERVAL_S,
        "history_points": HISTORY_POINTS,
    }
    return render(request, "admin/monitoring/live.html", context)


@never_cache
def live_figures(request: HttpRequest) -> JsonResponse:
    return JsonResponse(current_figures())
