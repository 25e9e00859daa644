"""Reads of the inference app (sync ORM: commands, admin, the registry's loader thread)."""

from __future__ import annotations

from django.db.models import QuerySet

from inference.models import ModelEndpoint, ModelGroup


def endpoint_list(*, enabled: bool | None = None, kind: str | None = None) -> QuerySet[ModelEndpoint]:
    qs = ModelEndpoint.objects.all()
    if enabled is not None:
        qs = qs.filter(enabled=enabled)
    if kind is not None:
        qs = qs.filter(kind=kind)
    return qs.order_by("kind", "priority", "name")


def group_list(*, enabled: bool | None = None, kind: str | None = None) -> QuerySet[ModelGroup]:
    qs = ModelGroup.objects.all()
    if enabled is not None:
        qs = qs.filter(enabled=enabled)
    if kind is not None:
        qs = qs.filter(kind=kind)
    return qs.order_by("kind", "name")
