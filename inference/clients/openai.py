"""OpenAI-compatible chat completions client (vLLM, llama.cpp server, ...).

One instance per endpoint and event loop, holding one pooled ``httpx.AsyncClient``
(keep-alive connections are reused across requests). Errors come out as the
typed errors of ``inference.errors``; the router decides about retries.

Timeouts: ``connect_timeout_s`` bounds the TCP/TLS connect; for a stream,
``read_timeout_s`` bounds the wait for the first content token and then each gap
between two reads; ``deadline`` (loop time) bounds the whole request. They are
enforced with ``asyncio.timeout`` around each read, never around a ``yield``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from django.conf import settings

from inference.config import EndpointConfig
from inference.errors import (
    InferenceError,
    UpstreamClientError,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
)
from inference.sse import SSEDecoder, SSEEvent
from inference.types import Usage

logger = logging.getLogger(__name__)

# How much of an error body goes into an error message.
_ERROR_BODY_LIMIT = 2000


@dataclass(slots=True)
class ChatChunk:
    """What one SSE event of a chat completion stream carried."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None


class _Pool:
    __slots__ = ("http", "in_flight")

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.in_flight = 0


def _in_flight(pool: _Pool) -> int:
    return pool.in_flight


class OpenAIClient:
    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.name = config.name
        # identity: the SSE bytes are read raw (no decoder per read); a server that
        # compresses anyway is still decoded (see chat_stream).
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        # The endpoint's limiter keeps requests <= max_concurrent; a little room for probes.
        slots = config.max_concurrent + 2
        # httpcore's pool scans every connection (and polls each idle socket) whenever a
        # request starts or ends, O(connections) or worse per request: with a few hundred
        # connections in one pool that scan dominated the request. Several small pools (each
        # a plain pooled AsyncClient with keep-alive), picked least-busy first, keep it short.
        shard = settings.INFERENCE_HTTP_POOL_SHARD_SIZE
        self._max_pools = max(1, math.ceil(slots / shard)) if shard > 0 else 1
        self._per_pool = math.ceil(slots / self._max_pools)
        self._base_url = config.base_url.rstrip("/") + "/"
        self._headers = headers
        # One TLS context for all pools (building one costs milliseconds); unused for http://.
        self._verify: Any = httpx.create_ssl_context() if self._base_url.startswith("https") else True
        # Pools are opened as the load needs them: a quiet endpoint holds one.
        self._pools = [self._new_pool()]
        self._http = self._pools[0].http  # probes and other light calls
        self._model: str | None = config.model_name or None

    def _new_pool(self) -> _Pool:
        config = self.config
        return _Pool(
            httpx.AsyncClient(
                base_url=self._base_url,
                headers=self._headers,
                verify=self._verify,
                timeout=httpx.Timeout(
                    connect=config.connect_timeout_s,
                    # Reads are bounded per read by asyncio.timeout (first token / gap / deadline).
                    read=None,
                    write=config.read_timeout_s,
                    pool=config.total_timeout_s,
                ),
                limits=httpx.Limits(max_connections=self._per_pool, max_keepalive_connections=self._per_pool),
            )
        )

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.http.aclose()

    def _pick(self) -> _Pool:
        """The least busy pool, a new one when all are full (the caller decrements ``in_flight``)."""
        pools = self._pools
        pool = pools[0] if len(pools) == 1 else min(pools, key=_in_flight)
        if pool.in_flight >= self._per_pool and len(pools) < self._max_pools:
            pool = self._new_pool()
            pools.append(pool)
        pool.in_flight += 1
        return pool

    # --- models -----------------------------------------------------------------

    async def list_models(self, *, timeout: float | None = None) -> list[str]:
        """Ids from ``GET /models`` (the readiness probe)."""
        data = await self._get_json("models", timeout=timeout or self.config.read_timeout_s)
        try:
            return [str(m["id"]) for m in data.get("data", [])]
        except (AttributeError, KeyError, TypeError) as exc:
            raise UpstreamServerError(f"malformed /models answer: {exc}", endpoint=self.name) from None

    async def model(self) -> str:
        """The configured model name, else the first model the server lists (looked up once)."""
        if self._model is None:
            models = await self.list_models(timeout=self.config.connect_timeout_s + self.config.read_timeout_s)
            if not models:
                raise UpstreamServerError("the server lists no model", endpoint=self.name)
            self._model = models[0]
        return self._model

    # --- chat completions -------------------------------------------------------

    async def chat(self, body: dict[str, Any], *, deadline: float) -> dict[str, Any]:
        """Non-streaming chat completion: the parsed JSON answer."""
        return await self._post_json("chat/completions", {**body, "stream": False}, deadline=deadline)

    async def chat_stream(self, body: dict[str, Any], *, deadline: float) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion; one ChatChunk per SSE event that carries something.

        Ends normally after ``data: [DONE]`` (or a clean end of stream after a
        finish_reason). Raises UpstreamTimeout when a bound is exceeded and
        UpstreamServerError when the stream breaks; the caller turns those into
        StreamInterrupted once text was delivered. Closing the iterator closes the
        HTTP response, hence the upstream connection: the server stops generating.
        """
        pool = self._pick()
        http = pool.http
        try:
            loop = asyncio.get_running_loop()
            payload = {**body, "stream": True}
            payload.setdefault("stream_options", {"include_usage": True})
            # orjson instead of httpx's json= (stdlib json.dumps): the body is built per request.
            request = http.build_request(
                "POST", "chat/completions", content=orjson.dumps(payload), headers=_JSON_CONTENT
            )
            first_text_deadline = min(deadline, loop.time() + self.config.read_timeout_s)
            try:
                async with asyncio.timeout_at(first_text_deadline):
                    response = await http.send(request, stream=True)
            except TimeoutError:
                raise UpstreamTimeout(f"no answer within {self.config.read_timeout_s:g}s", endpoint=self.name) from None
            except httpx.HTTPError as exc:
                raise _map_transport_error(exc, self.name) from exc
            try:
                if response.status_code >= 400:
                    text = await _read_error_body(response, min(deadline, loop.time() + self.config.read_timeout_s))
                    raise _status_error(response.status_code, text, self.name)
                decoder = SSEDecoder()
                encoded = response.headers.get("content-encoding", "identity").lower() not in ("", "identity")
                reads = response.aiter_bytes() if encoded else response.aiter_raw()
                got_text = False
                finished = False
                while True:
                    bound = min(
                        deadline, first_text_deadline if not got_text else loop.time() + self.config.read_timeout_s
                    )
                    try:
                        async with asyncio.timeout_at(bound):
                            piece = await anext(reads, None)
                    except TimeoutError:
                        what = "the next token" if got_text else "the first token"
                        raise UpstreamTimeout(f"no {what} in time", endpoint=self.name) from None
                    except httpx.HTTPError as exc:
                        raise _map_transport_error(exc, self.name) from exc
                    events = decoder.close() if piece is None else decoder.feed(piece)
                    for event in events:
                        chunk = _parse_event(event, self.name)
                        if chunk is None:  # [DONE]
                            await _drain(reads, min(deadline, loop.time() + _DRAIN_S))
                            return
                        if chunk.finish_reason:
                            finished = True
                        if chunk.text:
                            got_text = True
                        yield chunk
                    if piece is None:
                        if finished:
                            return  # a clean end after finish_reason; some servers omit [DONE]
                        raise UpstreamServerError("the stream ended before the answer was complete", endpoint=self.name)
            finally:
                await response.aclose()
        finally:
            pool.in_flight -= 1

    # --- plumbing ---------------------------------------------------------------

    async def _get_json(self, path: str, *, timeout: float) -> Any:
        try:
            async with asyncio.timeout(timeout):
                response = await self._http.get(path)
        except TimeoutError:
            raise UpstreamTimeout(f"GET /{path}: no answer within {timeout:g}s", endpoint=self.name) from None
        except httpx.HTTPError as exc:
            raise _map_transport_error(exc, self.name) from exc
        return _json_or_error(response, self.name)

    async def _post_json(self, path: str, payload: dict[str, Any], *, deadline: float) -> Any:
        pool = self._pick()
        try:
            async with asyncio.timeout_at(deadline):
                response = await pool.http.post(path, content=orjson.dumps(payload), headers=_JSON_CONTENT)
        except TimeoutError:
            raise UpstreamTimeout("no answer within the total timeout", endpoint=self.name) from None
        except httpx.HTTPError as exc:
            raise _map_transport_error(exc, self.name) from exc
        finally:
            pool.in_flight -= 1
        return _json_or_error(response, self.name)


_JSON_CONTENT = {"Content-Type": "application/json"}
# After [DONE] the body's last bytes (the chunked terminator) are normally already here:
# reading them lets httpcore put the connection back in the pool (an unfinished response
# closes it, and the next request pays a new TCP connect).
_DRAIN_S = 0.25


async def _drain(reads: AsyncIterator[bytes], deadline: float) -> None:
    try:
        async with asyncio.timeout_at(deadline):
            async for _ in reads:
                pass
    except (TimeoutError, httpx.HTTPError):
        pass  # the connection is dropped instead of reused


def _json_or_error(response: httpx.Response, endpoint: str) -> Any:
    if response.status_code >= 400:
        raise _status_error(response.status_code, response.text[:_ERROR_BODY_LIMIT], endpoint)
    try:
        return orjson.loads(response.content)
    except ValueError:
        raise UpstreamServerError("the answer is not JSON", status=response.status_code, endpoint=endpoint) from None


async def _read_error_body(response: httpx.Response, deadline: float) -> str:
    try:
        async with asyncio.timeout_at(deadline):
            body = await response.aread()
    except (TimeoutError, httpx.HTTPError):
        return ""
    return body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace")


def _error_message(text: str) -> str:
    """The ``error.message`` of an OpenAI-style error body, else the body itself."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip()[:500]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)[:500]
    if isinstance(error, str):
        return error[:500]
    return text.strip()[:500]


def _status_error(status: int, text: str, endpoint: str) -> InferenceError:
    message = f"upstream answered {status}: {_error_message(text)}"
    if status == 408:
        return UpstreamTimeout(message, endpoint=endpoint)
    if 400 <= status < 500 and status != 429:
        return UpstreamClientError(message, status=status, endpoint=endpoint)
    return UpstreamServerError(message, status=status, endpoint=endpoint)


def _map_transport_error(exc: httpx.HTTPError, endpoint: str) -> InferenceError:
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamConnectionError(f"connect timeout: {exc}", endpoint=endpoint)
    if isinstance(exc, httpx.ConnectError):
        return UpstreamConnectionError(f"cannot connect: {exc}", endpoint=endpoint)
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"timeout: {exc}", endpoint=endpoint)
    return UpstreamServerError(f"connection lost: {type(exc).__name__}: {exc}", endpoint=endpoint)


def _parse_event(event: SSEEvent, endpoint: str) -> ChatChunk | None:
    """One SSE event as a ChatChunk; None for ``[DONE]``; raises for an error event."""
    data = event.data.strip()
    if data == "[DONE]":
        return None
    if event.event == "error":
        raise _event_error(data, endpoint)
    try:
        payload = orjson.loads(data)
    except ValueError:
        raise UpstreamServerError(f"malformed stream event: {data[:200]!r}", endpoint=endpoint) from None
    if not isinstance(payload, dict):
        raise UpstreamServerError(f"malformed stream event: {data[:200]!r}", endpoint=endpoint)
    if "error" in payload:
        raise _event_error(data, endpoint)
    chunk = ChatChunk(model=payload.get("model"))
    usage = payload.get("usage")
    if isinstance(usage, dict):
        chunk.usage = Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))
    for choice in payload.get("choices") or []:
        delta = choice.get("delta") or {}
        text = delta.get("content")
        if text:
            chunk.text += text
        if choice.get("finish_reason"):
            chunk.finish_reason = choice["finish_reason"]
    return chunk


def _event_error(data: str, endpoint: str) -> InferenceError:
    """An error reported inside the stream (vLLM and llama.cpp send ``{"error": {...}}``)."""
    status = None
    try:
        error = json.loads(data).get("error")
        if isinstance(error, dict):
            status = int(error.get("code")) if str(error.get("code", "")).isdigit() else None
    except (ValueError, AttributeError):
        pass
    message = f"error in stream: {_error_message(data)}"
    if status is not None and 400 <= status < 500 and status not in (408, 429):
        return UpstreamClientError(message, status=status, endpoint=endpoint)
    return UpstreamServerError(message, status=status, endpoint=endpoint)


def completion_parts(data: dict[str, Any], endpoint: str) -> tuple[str, str | None, Usage, str | None]:
    """(text, finish_reason, usage, model) of a non-streaming chat completion."""
    try:
        choice = data["choices"][0]
        text = (choice.get("message") or {}).get("content") or ""
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise UpstreamServerError("malformed chat completion: no choices", endpoint=endpoint) from None
    usage_data = data.get("usage") or {}
    usage = Usage(int(usage_data.get("prompt_tokens") or 0), int(usage_data.get("completion_tokens") or 0))
    return text, finish, usage, data.get("model")
