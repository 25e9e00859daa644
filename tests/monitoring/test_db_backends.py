"""monitoring.db: django-prometheus's query metrics without a new cursor class per connection."""

from __future__ import annotations

import pytest
from django.db import connection
from prometheus_client import REGISTRY

pytestmark = pytest.mark.django_db


def _cursor_class() -> type:
    # What a new connection (PostgreSQL: every pool checkout) or a new cursor (SQLite)
    # would be made with.
    if connection.vendor == "postgresql":
        return connection.get_connection_params()["cursor_factory"]
    return type(connection.create_cursor())


def test_one_cursor_class_for_every_connection() -> None:
    first = _cursor_class()
    assert all(_cursor_class() is first for _ in range(3))
    assert first.__qualname__.endswith("CursorWrapper")  # django-prometheus's instrumented cursor


def test_queries_are_still_counted() -> None:
    labels = {"alias": "default", "vendor": connection.vendor}
    before = REGISTRY.get_sample_value("django_db_execute_total", labels) or 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        # (SQLite's executemany takes DML only; no row has these ids.)
        cursor.executemany("UPDATE django_migrations SET app = app WHERE id = %s", [(-1,), (-2,)])
    assert REGISTRY.get_sample_value("django_db_execute_total", labels) == before + 3
    assert REGISTRY.get_sample_value("django_db_execute_many_total", labels) is not None
