"""PostgreSQL with django-prometheus's query metrics (see ``monitoring.db``), and with database faults bounded.

What a PostgreSQL restart or outage does to a request, and what this backend does about it
(issue #20; docs/operations.md, "Dependency faults"):

- A pooled connection that died with the server is found before use: the pool checks each
  connection it hands out (``CONN_HEALTH_CHECKS``, settings), so a restart does not answer
  500s from dead connections until the pool has cycled through them.
- A read that fails because its connection broke mid-query is retried once on a fresh
  connection (``RetryingCursorWrapper``): only a single ``SELECT`` outside any transaction,
  so nothing can be done twice.
- While the database does not answer, connecting fails at once instead of every request
  waiting the pool's timeout (``monitoring.outages``): one caller probes per interval, the
  others get the error in microseconds, and the outage is logged once per interval.
"""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base
from django.db.backends.utils import CursorWrapper
from django.db.utils import InterfaceError, OperationalError
from django_prometheus.db.backends.postgresql import base as instrumented

from monitoring.db import cursor_wrapper
from monitoring.outages import outage

# Seconds between connection attempts while the database is down (the first caller after it probes).
RETRY_S = 1.0
DATABASE = outage("database", retry_s=RETRY_S)


def _pool_timeout() -> float:
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool") or {}
    return float(pool.get("timeout", 30.0)) if isinstance(pool, dict) else 30.0


class RetryingCursorWrapper(CursorWrapper):
    """Django's cursor, with one retry of a plain read whose connection broke under it."""

    def _execute(self, sql: str, params: Any, *args: Any) -> Any:
        try:
            return super()._execute(sql, params, *args)
        except (OperationalError, InterfaceError):
            if not self._may_retry(sql):
                raise
        # The connection is gone (server restarted, idle connection cut): a fresh one from the
        # pool (which discards the broken one), the same statement once more.
        self.db.close()
        self.db.ensure_connection()
        self.cursor = self.db.create_cursor()
        return super()._execute(sql, params, *args)

    def _may_retry(self, sql: str) -> bool:
        if self.db.in_atomic_block or getattr(self.cursor, "name", None):
            return False  # a transaction's state, or a server-side cursor, cannot be replayed
        if not isinstance(sql, str) or not sql.lstrip()[:6].upper() == "SELECT":
            return False
        raw = self.db.connection
        return raw is None or bool(getattr(raw, "broken", False) or raw.closed)


class DatabaseWrapper(instrumented.DatabaseWrapper):
    def get_connection_params(self) -> dict[str, Any]:
        # Django's parameters (not django-prometheus's override, which wraps the cursor
        # factory in a new class every time), wrapped in the one cached class.
        params = base.DatabaseWrapper.get_connection_params(self)
        params["cursor_factory"] = cursor_wrapper(params["cursor_factory"], self.alias, self.vendor)
        return params

    def make_cursor(self, cursor: Any) -> CursorWrapper:
        return RetryingCursorWrapper(cursor, self)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        if not DATABASE.admit(probe_window=_pool_timeout() + RETRY_S):
            raise self.Database.OperationalError(
                "database unreachable (a connection failed moments ago); not trying again yet"
            )
        started = time.monotonic()
        try:
            connection = super().get_new_connection(conn_params)
        except Exception as exc:
            if self._is_outage(exc, waited=time.monotonic() - started):
                DATABASE.failed(exc)
            else:
                DATABASE.release_probe()
            raise
        DATABASE.succeeded()
        return connection

    def _is_outage(self, exc: Exception, *, waited: float) -> bool:
        """A failed connect means the server is unreachable, unless the pool was only busy.

        A pool timeout is ambiguous: all connections in use (load) or none to be had (outage).
        Under load other threads keep getting connections; if none did while this one waited,
        the database is not answering.
        """
        from psycopg_pool import PoolTimeout

        if isinstance(exc, PoolTimeout):
            return DATABASE.no_success_within(waited)
        return isinstance(exc, self.Database.OperationalError | self.Database.InterfaceError | OSError)
