"""PostgreSQL with django-prometheus's query metrics (see ``monitoring.db``)."""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql import base
from django_prometheus.db.backends.postgresql import base as instrumented

from monitoring.db import cursor_wrapper


class DatabaseWrapper(instrumented.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        # Django's parameters (not django-prometheus's override, which wraps the cursor
        # factory in a new class every time), wrapped in the one cached class.
        params = base.DatabaseWrapper.get_connection_params(self)
        params["cursor_factory"] = cursor_wrapper(params["cursor_factory"], self.alias, self.vendor)
        return params
