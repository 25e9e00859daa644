"""/admin/live/: staff-only live figures (included before ``admin/`` in config/urls.py)."""

from django.contrib import admin
from django.urls import path

from monitoring import admin_views

urlpatterns = [
    path("", admin.site.admin_view(admin_views.live_page), name="monitoring-live"),
    path("figures.json", admin.site.admin_view(admin_views.live_figures), name="monitoring-live-figures"),
]
