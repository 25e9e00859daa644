from django.urls import path
from django_prometheus.exports import ExportToDjangoView

from monitoring import views

urlpatterns = [
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("metrics", ExportToDjangoView, name="prometheus-django-metrics"),
]
