"""An HTTP proxy in front of the real Elasticsearch that spoils chosen ``_msearch`` answers.

What a node dying mid-search does to a search, on demand, for the first ``spoil`` matching
answers, which a real node kill gives only by chance: ``"partial"`` (a shard's hits missing,
``_shards.failed`` set, HTTP 200), ``"failed"`` (every search of the answer an error item:
503, all shards failed) or ``"timed_out"`` (``timed_out`` set, the hits kept). Everything else is passed through unchanged, over real sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import aiohttp
from aiohttp import web

# Headers aiohttp sets itself on each side (bodies are read whole and go back uncompressed).
_HOP = {"content-length", "content-encoding", "transfer-encoding", "connection", "accept-encoding"}


class PartialShards:
    def __init__(self, es_url: str, *, spoil: int, how: str = "partial", when: bytes = b'"knn"') -> None:
        self.es_url = es_url.rstrip("/")
        self.spoil = spoil  # how many matching _msearch answers to spoil
        self.how = how
        self.when = when  # a matching _msearch's body holds these bytes (default: the hybrid search)
        self.spoiled = 0
        self.matching = 0  # _msearch requests whose body held ``when``
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="partial-shards", daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def __enter__(self) -> PartialShards:
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession()  # decompresses: bodies go back plain
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP | {"host"}}
        assert self._session is not None
        async with self._session.request(
            request.method, f"{self.es_url}{request.rel_url}", data=body, headers=headers
        ) as upstream:
            answer = await upstream.read()
            back = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            if request.path.endswith("/_msearch"):
                self.matching += self.when in body
                if self.when in body and self.spoiled < self.spoil and upstream.status == 200:
                    self.spoiled += 1
                    spoiled = {"partial": _partial, "failed": _failed, "timed_out": _timed_out}[self.how](
                        json.loads(answer)
                    )
                    answer = json.dumps(spoiled).encode()
            return web.Response(status=upstream.status, body=answer, headers=back)


def _partial(msearch: dict) -> dict:
    """Every search of the answer as if one of its shards had failed: no hits from it (here: none)."""
    for response in msearch["responses"]:
        shards = response.setdefault("_shards", {"total": 1, "successful": 1, "skipped": 0, "failed": 0})
        shards["failed"] = 1
        shards["successful"] = max(0, shards["total"] - 1)
        shards["failures"] = [{"shard": 0, "index": "spoiled", "reason": {"type": "node_disconnected_exception"}}]
        response["hits"]["hits"] = []
    return msearch


def _failed(msearch: dict) -> dict:
    """Every search of the answer an error item, as when no copy of any shard answered a phase."""
    error = {"type": "search_phase_execution_exception", "reason": "all shards failed", "phase": "fetch"}
    msearch["responses"] = [{"error": {"root_cause": [], **error}, "status": 503} for _ in msearch["responses"]]
    return msearch


def _timed_out(msearch: dict) -> dict:
    """Every search of the answer as if a shard had run past the search's ``timeout``."""
    for response in msearch["responses"]:
        response["timed_out"] = True
    return msearch
