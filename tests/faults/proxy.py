"""A TCP proxy that a test can cut: the fault suite's way to stop PostgreSQL, Elasticsearch, Triton or the LLM.

The shared services other engineers use are never stopped. Instead the platform under test
reaches each of them through its own ``FaultProxy``, and ``cut()`` does to the platform what
the service stopping does: every open connection is reset (RST, as when a process dies with
data in flight) and new connections are refused (nothing listens on the port). ``restore()``
listens again on the same port; connections made from then on reach the service.
``drop_next_requests()`` kills the open connections more subtly: each looks alive until its
client next writes, and that write is answered with a reset (a pooled connection that passes
the pool's check and dies under the request written on it); new connections work.

Runs its own event loop in a daemon thread, so it works under sync and async tests alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Callable


class FaultProxy:
    def __init__(self, target_host: str, target_port: int, *, name: str = "proxy") -> None:
        self.name = name
        self.target = (target_host, target_port)
        self.port = _free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._doomed: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self.dropped = 0  # requests answered with a reset by drop_next_requests
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"faultproxy-{name}", daemon=True)
        self._thread.start()
        self.restore()

    # --- control (from any thread) -------------------------------------------------------

    def cut(self) -> None:
        """Refuse new connections and reset every open one."""
        self._call(self._cut())

    def restore(self) -> None:
        """Accept connections again (on the same port)."""
        self._call(self._listen())

    def drop_next_requests(self) -> None:
        """Reset each open connection when its client next writes (the write is not passed on)."""
        self._call(self._doom())

    def close(self) -> None:
        self._call(self._cut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    @property
    def open_connections(self) -> int:
        return len(self._pairs)

    def _call(self, coro) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # --- the proxy -------------------------------------------------------------------------

    async def _listen(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port, reuse_address=True)

    async def _doom(self) -> None:
        self._doomed |= self._pairs

    async def _cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for client, upstream in list(self._pairs):
            _reset(client)
            _reset(upstream)
        self._pairs.clear()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(*self.target), 5)
        except (OSError, TimeoutError):
            _reset(client_w)
            return
        pair = (client_w, up_w)
        self._pairs.add(pair)

        def doomed() -> bool:
            if pair not in self._doomed:
                return False
            self._doomed.discard(pair)
            self.dropped += 1
            _reset(client_w)
            _reset(up_w)
            return True

        try:
            await asyncio.gather(_pump(client_r, up_w, doomed), _pump(up_r, client_w))
        finally:
            self._pairs.discard(pair)
            self._doomed.discard(pair)
            for writer in pair:
                with contextlib.suppress(Exception):
                    writer.close()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, doomed: Callable[[], bool] = lambda: False
) -> None:
    try:
        while data := await reader.read(65536):
            if doomed():
                return
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a killed process's socket does."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(Exception):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
