"""ASGI entry point: HTTP to Django, websockets through Channels.

Production: ``gunicorn config.asgi:application -c deploy/gunicorn.conf.py`` (uvicorn
workers, ``config.workers.UvicornWorker``); local: ``manage.py runserver`` (Daphne).

``/v1/`` goes to ``config.data_plane`` (no Django request handler at all; issue #17), which
hands the paths it has no route for to the fast path below. With ``CHAT_API_DATA_PLANE=0``,
the integrators' API (``CHAT_API_FAST_PATH_PREFIXES``, default ``/v1/``) goes through
a second Django handler with a short, async-only middleware chain
(``CHAT_API_FAST_PATH_MIDDLEWARE``): Django's ``MiddlewareMixin`` middleware run
their hooks through ``sync_to_async`` (a thread hop each, twice per middleware),
and the full chain made an API request cost several times its own work
(docs/performance.md). Those paths use no session, cookie, CSRF, message or
template, so nothing the skipped middleware provide applies to them.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from asgiref.sync import SyncToAsync  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from channels.sessions import CookieMiddleware, InstanceSessionWrapper, SessionMiddleware  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from chat.ws_auth import WebsocketAuthMiddleware  # noqa: E402
from config.data_plane import FAST_PATH_SYNC_THREAD, PREFIX, DataPlane  # noqa: E402
from config.routing import websocket_urlpatterns  # noqa: E402
from monitoring import tracing  # noqa: E402
from monitoring.logging import RequestIdASGIMiddleware  # noqa: E402


class FastPathASGIHandler(ASGIHandler):
    """Django's ASGI handler with its own (async-only) middleware list."""

    def __init__(self, middleware: list[str]) -> None:
        self._fast_middleware = list(middleware)
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        # BaseHandler reads settings.MIDDLEWARE; swap it for the build only (import time,
        # single-threaded), so the chain is built by Django's own code.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = self._fast_middleware
        try:
            super().load_middleware(is_async=is_async)
        finally:
            settings.MIDDLEWARE = full

    async def __call__(self, scope, receive, send):
        # No per-request ThreadSensitiveContext: it starts a new thread for each request's
        # sync steps (request_started/finished receivers, response.close()); with no sync
        # middleware those few calls share one long-lived sync thread instead: the fast
        # path's own, not Django's process-wide one, which websocket connects and anything
        # else calling database_sync_to_async also use (a hung database there held up every
        # /v1 request, issue #20). The context var is per request task, so this sets nothing
        # for anyone else.
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        SyncToAsync.thread_sensitive_context.set(FAST_PATH_SYNC_THREAD)
        await self.handle(scope, receive, send)


class WebsocketSessionMiddleware(SessionMiddleware):
    """Channels' SessionMiddleware without its ``send`` wrapper, for websockets.

    The wrapper saves a modified session when an HTTP response starts, which a websocket
    never sends; on a socket it only inspects the session on every outgoing frame (about
    4 % of the chat's token loop in the websocket benchmark). The session is still read
    from the cookie into the scope; the chat consumer saves one it creates itself.
    """

    async def __call__(self, scope, receive, send):
        wrapper = InstanceSessionWrapper(scope, send)
        await wrapper.resolve_session()
        return await self.inner(wrapper.scope, receive, send)


def _http_app():
    prefixes = tuple(settings.CHAT_API_FAST_PATH_PREFIXES)
    if not prefixes:
        return django_asgi_app
    fast = FastPathASGIHandler(settings.CHAT_API_FAST_PATH_MIDDLEWARE)
    if settings.CHAT_API_DATA_PLANE and PREFIX in prefixes:
        # /v1/ without Django's handler; the fast handler answers the paths it has no route for.
        plane = DataPlane(fallback=fast)
        other = tuple(p for p in prefixes if p != PREFIX)

        async def routed(scope, receive, send):
            path = scope["path"]
            if path.startswith(PREFIX):
                await plane(scope, receive, send)
            elif other and path.startswith(other):
                await fast(scope, receive, send)
            else:
                await django_asgi_app(scope, receive, send)

        return routed

    async def http(scope, receive, send):
        app = fast if scope["path"].startswith(prefixes) else django_asgi_app
        await app(scope, receive, send)

    return http


application = ProtocolTypeRouter(
    {
        # With tracing on, one server span per request (monitoring.tracing); the app itself otherwise.
        "http": tracing.wrap_asgi_http(_http_app()),
        # Startup/shutdown events: the spans still queued are exported before the server exits.
        "lifespan": tracing.lifespan,
        "websocket": RequestIdASGIMiddleware(
            # Channels' AuthMiddlewareStack, with the session middleware above.
            AllowedHostsOriginValidator(
                CookieMiddleware(WebsocketSessionMiddleware(WebsocketAuthMiddleware(URLRouter(websocket_urlpatterns))))
            )
        ),
    }
)
