"""SQLite with django-prometheus's query metrics (see ``monitoring.db``)."""

from __future__ import annotations

from typing import Any

from django_prometheus.db.backends.sqlite3 import base as instrumented

from monitoring.db import cursor_wrapper


class DatabaseWrapper(instrumented.DatabaseWrapper):
    def create_cursor(self, name: str | None = None) -> Any:
        return self.connection.cursor(factory=cursor_wrapper(self.CURSOR_CLASS, self.alias, self.vendor))
