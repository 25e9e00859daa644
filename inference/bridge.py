"""Calling the async inference layer from synchronous code (ingestion jobs, commands, admin).

``async_to_sync`` outside a running server starts a new event loop for every call,
and clients are bound to their loop: each call would open (and leak) fresh
connections. ``run_sync`` instead runs the coroutine on one long-lived event loop
owned by the layer, in a daemon thread, so pooled clients, batchers and the
registry stay warm across calls.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from monitoring import tracing

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_lock = threading.Lock()


def _bridge_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def serve() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=serve, name="inference-bridge", daemon=True).start()
            started.wait()
            _loop = loop
        return _loop


def run_sync(fn: Callable[[], Awaitable[T]], *, timeout: float | None = None) -> T:
    """Run ``fn()`` on the bridge loop and wait for its result (blocks the calling thread).

    Works from plain threads and from a thread that runs another event loop (the
    caller's loop is blocked meanwhile: keep such calls rare and short).
    """
    loop = _bridge_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("run_sync called from the bridge loop itself: await the coroutine instead")

    # The caller's span follows the call onto the bridge loop (a task there would not inherit it).
    caller = tracing.current_span()

    async def call() -> T:
        with tracing.use_span(caller):
            return await fn()

    return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout)
