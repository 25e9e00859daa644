"""Who is on a chat websocket: Channels' AuthMiddleware, made safe for dependency faults.

Channels resolves the user (session row or cache, then the user row) with
``database_sync_to_async``: on the ONE sync thread the process shares with other
connections and with the API fast path's own sync steps (config/asgi.py). A database that
hangs for a few seconds then held up every connect and, behind them, unrelated ``/v1``
requests (issue #20: a ``GET /v1/models`` waited 31.7 s at the client, 18.5 ms in the server).

Here each connect resolves its user on a thread of its own (a ``ThreadSensitiveContext``
for the connect only: the thread goes away with it), and when the session or the user
cannot be read (database unreachable) the scope says so (``auth_unavailable``) instead of
making a signed-in user anonymous: the consumer refuses the socket with "try again later"
(close code 1013), and the client reconnects as who it is once the database is back.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import ThreadSensitiveContext
from channels.auth import AuthMiddleware, get_user
from django.contrib.auth.models import AnonymousUser

from monitoring.outages import is_unreachable_error

log = logging.getLogger(__name__)

AUTH_UNAVAILABLE = "auth_unavailable"


class WebsocketAuthMiddleware(AuthMiddleware):
    async def resolve_scope(self, scope: dict[str, Any]) -> None:
        try:
            async with ThreadSensitiveContext():
                scope["user"]._wrapped = await get_user(scope)
        except Exception as exc:
            if not is_unreachable_error(exc):
                raise
            scope["user"]._wrapped = AnonymousUser()
            scope[AUTH_UNAVAILABLE] = True
