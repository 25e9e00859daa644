"""Run a small synchronous ORM function from async code.

Django's own async ORM methods (``aget``, ``acreate``...) run every call on ONE
shared thread; under many concurrent chats the start/final writes would queue
behind each other. These functions run on a small dedicated thread pool
(CHAT_DB_THREADS; keep it at most the database pool size) instead, each call
with a clean connection returned to the pool afterwards (as Channels does), and
are only ever called outside the token loop.

A synchronous view that waits on such work (``async_to_sync``) must not sit on a pooled
connection meanwhile: under load every pool slot is held by a waiting request thread and the
work it waits for cannot get one (a deadlock broken only by the pool's timeout, as 503s).
``call_async`` hands the thread's connection back first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import async_to_sync
from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import connections

T = TypeVar("T")
P = ParamSpec("P")


@cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=settings.CHAT_DB_THREADS, thread_name_prefix="chat-db")


def db(fn: Callable[..., T]) -> Callable[..., Any]:
    """``await db(fn)(*args, **kwargs)``: fn in a worker thread with a clean DB connection."""
    return DatabaseSyncToAsync(fn, thread_sensitive=False, executor=_executor())


def release_connections() -> None:
    """Hand this thread's pooled database connections back (kept inside a transaction; SQLite has no pool)."""
    for conn in connections.all(initialized_only=True):
        if getattr(conn, "pool", None) is not None and not conn.in_atomic_block:
            conn.close()


def call_async(fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
    """``async_to_sync(fn)(*args, **kwargs)`` for a synchronous view, holding no connection while it waits."""
    release_connections()
    return async_to_sync(fn)(*args, **kwargs)
