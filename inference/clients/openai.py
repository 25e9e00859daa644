"""OpenAI-compatible chat completions client (vLLM, llama.cpp server, ...).

One instance per endpoint and event loop, holding one ``aiohttp.ClientSession``
(created on first use inside the loop; keep-alive connections are reused across
requests). aiohttp rather than httpx: streaming 40-chunk answers 100 at a time,
httpx cost 19 ms of CPU per stream (httpcore scans its whole pool on every
request; 6.3 ms even split into pools of 16), aiohttp 1.1-1.5 ms. Errors come
out as the typed errors of ``inference.errors``; the router decides about retries.

Timeouts: ``connect_timeout_s`` bounds the TCP/TLS connect; for a stream,
``read_timeout_s`` bounds the wait for the first content token and then each gap
between two reads; ``deadline`` (loop time) bounds the whole request. They are
enforced with ``asyncio.timeout`` around each read, never around a ``yield``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from yarl import URL

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
from monitoring import tracing

logger = logging.getLogger(__name__)

# How much of an error body goes into an error message.
_ERROR_BODY_LIMIT = 2000
# Idle keep-alive connections are dropped before the upstream's own idle timeout (5 s for
# uvicorn/vLLM and llama.cpp): reusing one the server is closing fails the request.
_KEEPALIVE_S = 4.0


@dataclass(slots=True)
class ChatChunk:
    """What one SSE event of a chat completion stream carried."""

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    model: str | None = None
    pieces: int = 1  # events merged into this chunk (chat_stream's coalesce)


class OpenAIClient:
    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.name = config.name
        # identity: the SSE bytes arrive as sent; a server that compresses anyway is still
        # decoded (the session's auto_decompress).
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if config.api_key:
            headers["Authorization"] = f"Bearer {config.api_key}"
        self._headers = headers
        base = config.base_url.rstrip("/") + "/"
        # Parsed once: a URL object is used as is by every request.
        self._chat_url = URL(base + "chat/completions")
        self._models_url = URL(base + "models")
        self._proxy = _env_proxy(self._chat_url)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        self._model: str | None = config.model_name or None

    def _http(self) -> aiohttp.ClientSession:
        """The session, created on first use: aiohttp binds it to the running loop."""
        session = self._session
        if session is None:
            if self._closed:
                raise RuntimeError(f"the client of endpoint {self.name} is closed")
            config = self.config
            connector = aiohttp.TCPConnector(
                # The endpoint's limiter keeps requests <= max_concurrent; a little room for probes.
                limit=config.max_concurrent + 2,
                limit_per_host=0,  # one host: ``limit`` is the bound
                keepalive_timeout=_KEEPALIVE_S,
                ttl_dns_cache=30,
                # TLS: aiohttp's default context (verified, system CA store), built once at its import.
            )
            session = self._session = aiohttp.ClientSession(
                connector=connector,
                headers=self._headers,
                # Only getting a connection (DNS, TCP, TLS; a pool slot, which the endpoint's
                # limiter keeps free) is bounded here; reads and the whole request are bounded per
                # read by asyncio.timeout (first token / gap / deadline). total=None: no 300 s default.
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    connect=config.connect_timeout_s,
                    sock_connect=config.connect_timeout_s,
                    sock_read=None,
                ),
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
                auto_decompress=True,
                proxy=self._proxy,
            )
        return session

    async def aclose(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- models -----------------------------------------------------------------

    async def list_models(self, *, timeout: float | None = None) -> list[str]:
        """Ids from ``GET /models`` (the readiness probe)."""
        data = await self._get_json(self._models_url, timeout=timeout or self.config.read_timeout_s)
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
        return await self._post_json(self._chat_url, {**body, "stream": False}, deadline=deadline)

    async def chat_stream(
        self, body: dict[str, Any], *, deadline: float, coalesce: bool = False, span: Any = None
    ) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion; one ChatChunk per SSE event that carries something.

        ``coalesce``: consecutive text-only events that arrived in the same read become one
        chunk (``pieces`` says how many). A read holds more than one event only when this
        process fell behind the upstream; merging them then makes the catch-up cheaper
        (one frame downstream instead of one per token), so an overloaded process sheds
        per-token work instead of queueing it. Without load nothing changes.

        Ends normally after ``data: [DONE]`` (or a clean end of stream after a
        finish_reason). Raises UpstreamTimeout when a bound is exceeded and
        UpstreamServerError when the stream breaks; the caller turns those into
        StreamInterrupted once text was delivered. Closing the iterator closes the
        HTTP response, hence the upstream connection: the server stops generating.

        ``span`` (the caller's generation span) is made current while the request is sent,
        so the HTTP client's span is its child; never across a ``yield``.
        """
        http = self._http()
        loop = asyncio.get_running_loop()
        payload = {**body, "stream": True}
        payload.setdefault("stream_options", {"include_usage": True})
        read_timeout = self.config.read_timeout_s
        first_text_deadline = min(deadline, loop.time() + read_timeout)
        try:
            async with asyncio.timeout_at(first_text_deadline):
                # orjson: the body is built per request (aiohttp's json= is the stdlib's json.dumps).
                with tracing.use_span(span):
                    response = await http.post(
                        self._chat_url, data=orjson.dumps(payload), headers=_JSON_CONTENT, allow_redirects=False
                    )
        # Before TimeoutError: aiohttp's connect timeout is a TimeoutError too.
        except aiohttp.ClientError as exc:
            raise _map_transport_error(exc, self.name) from exc
        except TimeoutError:
            raise UpstreamTimeout(f"no answer within {read_timeout:g}s", endpoint=self.name) from None
        try:
            if response.status >= 400:
                text = await _read_error_body(response, min(deadline, loop.time() + read_timeout))
                raise _status_error(response.status, text, self.name)
            content = response.content
            decoder = SSEDecoder()
            got_text = False
            finished = False
            while True:
                bound = min(deadline, first_text_deadline if not got_text else loop.time() + read_timeout)
                try:
                    async with asyncio.timeout_at(bound):
                        piece = await content.readany()  # b"" only at the end of the body
                except aiohttp.ClientError as exc:
                    raise _map_transport_error(exc, self.name) from exc
                except TimeoutError:
                    what = "the next token" if got_text else "the first token"
                    raise UpstreamTimeout(f"no {what} in time", endpoint=self.name) from None
                events = decoder.feed(piece) if piece else decoder.close()
                merged: ChatChunk | None = None  # text-only chunk being coalesced
                for event in events:
                    try:
                        chunk = _parse_event(event, self.name)
                    except InferenceError:
                        if merged is not None:  # text received before the error is delivered first
                            yield merged
                        raise
                    if chunk is None:  # [DONE]
                        if merged is not None:
                            yield merged
                        await _drain(content, min(deadline, loop.time() + _DRAIN_S))
                        return
                    if chunk.finish_reason:
                        finished = True
                    if chunk.text:
                        got_text = True
                    if coalesce and chunk.text and chunk.finish_reason is None and chunk.usage is None:
                        if merged is None:
                            merged = chunk
                        else:
                            merged.text += chunk.text
                            merged.pieces += 1
                        continue
                    if merged is not None:
                        yield merged
                        merged = None
                    yield chunk
                if merged is not None:
                    yield merged
                if not piece:
                    if finished:
                        return  # a clean end after finish_reason; some servers omit [DONE]
                    raise UpstreamServerError("the stream ended before the answer was complete", endpoint=self.name)
        finally:
            # A body read to its end already gave the connection back to the pool (close() is
            # then a no-op); otherwise this closes the connection, and the upstream sees it.
            response.close()

    # --- plumbing ---------------------------------------------------------------

    async def _get_json(self, url: URL, *, timeout: float) -> Any:
        try:
            async with asyncio.timeout(timeout):
                async with self._http().get(url, allow_redirects=False) as response:
                    body = await response.read()
        except aiohttp.ClientError as exc:
            raise _map_transport_error(exc, self.name) from exc
        except TimeoutError:
            raise UpstreamTimeout(f"GET {url.path}: no answer within {timeout:g}s", endpoint=self.name) from None
        return _json_or_error(response.status, body, self.name)

    async def _post_json(self, url: URL, payload: dict[str, Any], *, deadline: float) -> Any:
        try:
            async with asyncio.timeout_at(deadline):
                async with self._http().post(
                    url, data=orjson.dumps(payload), headers=_JSON_CONTENT, allow_redirects=False
                ) as response:
                    body = await response.read()
        except aiohttp.ClientError as exc:
            raise _map_transport_error(exc, self.name) from exc
        except TimeoutError:
            raise UpstreamTimeout("no answer within the total timeout", endpoint=self.name) from None
        return _json_or_error(response.status, body, self.name)


_JSON_CONTENT = {"Content-Type": "application/json"}
# After [DONE] the body's last bytes (the chunked terminator) are normally already here:
# reading them hands the connection back to the pool (an unfinished response closes it,
# and the next request pays a new TCP connect).
_DRAIN_S = 0.25


def _env_proxy(url: URL) -> str | None:
    """The HTTP(S)_PROXY / ALL_PROXY for ``url`` unless NO_PROXY exempts it, read once.

    httpx honoured these variables; aiohttp's ``trust_env`` would look them (and ~/.netrc)
    up in a worker thread on every request.
    """
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy or not url.host or urllib.request.proxy_bypass_environment(url.host, proxies):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


async def _drain(content: aiohttp.StreamReader, deadline: float) -> None:
    if content.at_eof():
        return
    try:
        async with asyncio.timeout_at(deadline):
            while await content.readany():
                pass
    except (aiohttp.ClientError, TimeoutError):
        pass  # the connection is dropped instead of reused


def _json_or_error(status: int, body: bytes, endpoint: str) -> Any:
    if status >= 400:
        raise _status_error(status, body[:_ERROR_BODY_LIMIT].decode("utf-8", "replace"), endpoint)
    try:
        return orjson.loads(body)
    except ValueError:
        raise UpstreamServerError("the answer is not JSON", upstream_status=status, endpoint=endpoint) from None


async def _read_error_body(response: aiohttp.ClientResponse, deadline: float) -> str:
    try:
        async with asyncio.timeout_at(deadline):
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError):
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
        return UpstreamClientError(message, upstream_status=status, endpoint=endpoint)
    return UpstreamServerError(message, upstream_status=status, endpoint=endpoint)


def _map_transport_error(exc: aiohttp.ClientError, endpoint: str) -> InferenceError:
    # ClientConnectorError covers refused connections, DNS and TLS (certificate) failures.
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectionError(f"cannot connect: {exc}", endpoint=endpoint)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamConnectionError(f"connect timeout: {exc}", endpoint=endpoint)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"timeout: {exc}", endpoint=endpoint)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        # ServerDisconnectedError, ClientOSError (reset), a body cut short (ClientPayloadError).
        return UpstreamServerError(f"connection lost: {type(exc).__name__}: {exc}", endpoint=endpoint)
    return UpstreamServerError(f"{type(exc).__name__}: {exc}", endpoint=endpoint)


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
        return UpstreamClientError(message, upstream_status=status, endpoint=endpoint)
    return UpstreamServerError(message, upstream_status=status, endpoint=endpoint)


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
