"""Database backends: django-prometheus's instrumented ones, without a class per connection.

django-prometheus (``django_prometheus.db.common.ExportingCursorWrapper``) builds a new
cursor *class* each time a connection is set up (PostgreSQL: ``get_connection_params``,
called by every ``connect()``, so with a connection pool on every checkout) or a cursor is
made (SQLite: ``create_cursor``). A class is a few dozen objects in reference cycles, so each
one is garbage only the cycle collector frees: under 1,000 streaming chats that was most of
the cyclic garbage a worker made, and it set off the collections that paused the event loop
(docs/chat.md, "Where the tail came from"). The metrics, names and labels are the same;
only the class is made once per (cursor class, alias, vendor).
"""

from __future__ import annotations

from functools import cache

from django_prometheus.db.common import ExportingCursorWrapper

cursor_wrapper = cache(ExportingCursorWrapper)
