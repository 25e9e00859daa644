"""Run a small synchronous ORM function from async code.

Django's own async ORM methods (``aget``, ``acreate``...) run every call on ONE
shared thread; under many concurrent chats the start/final writes would queue
behind each other. These functions run on a small dedicated thread pool
(CHAT_DB_THREADS; keep it at most the database pool size) instead, each call
with a clean connection returned to the pool afterwards (as Channels does), and
are only ever called outside the token loop.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from typing import Any, TypeVar

from channels.db import DatabaseSyncToAsync
from django.conf import settings

T = TypeVar("T")


@cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=settings.CHAT_DB_THREADS, thread_name_prefix="chat-db")


def db(fn: Callable[..., T]) -> Callable[..., Any]:
    """``await db(fn)(*args, **kwargs)``: fn in a worker thread with a clean DB connection."""
    return DatabaseSyncToAsync(fn, thread_sensitive=False, executor=_executor())
