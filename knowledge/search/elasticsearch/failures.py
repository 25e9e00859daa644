"""Elasticsearch's failures, made ours: ``translated`` errors, and searches made once more.

``translated`` turns transport and server errors into ``SearchUnavailable`` (``IndexMissing``
for a missing index), the knowledge app's branch of the platform's error family.

Searches that only some shards answered (``searched``) are made once more, then served as
they are.

Elasticsearch answers a search whose shards did not all answer with 200 and the hits of the
shards that did (``allow_partial_search_results`` defaults to true). While a node dies that
happens to a search even though a replica holds every hit: the query phase moves on to another
copy of a shard, but the later phases (kNN's query after its dfs phase, every fetch) go back
to the copy that answered first, and fail with it. The same search made again a moment later
is whole (measured here: one node of three SIGKILLed under six threads of hybrid ``_msearch``
gave one partial search among 7,130, and one among 12,396, the rest whole; the topology test
lost a document from one answer's sources that way in CI). So: one more try. A search still
partial after it (both copies of a shard gone: a red index) is served as it is, logged and
counted: the shards that answered still hold true sources, and no sources at all would be the
worse answer. A search whose shards timed out (``ES_TIMEOUT``) is served at once: made again it
would wait as long again, on an engine already slow, and the request's bound would double.

When no shard answers a phase, the ``_msearch`` item is an error (5xx, "all shards
failed") rather than a partial answer: the same one more try, then the error as before.
``knowledge_search_partial_total{search, after_retry}`` counts the outcomes (whole,
partial, failed; not_retried for a timeout).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from elasticsearch import ApiError, NotFoundError, TransportError

from knowledge.errors import IndexMissing, SearchUnavailable
from monitoring.metrics import SEARCH_PARTIAL

logger = logging.getLogger(__name__)

T = TypeVar("T")


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise Elasticsearch's errors as ``SearchUnavailable`` (``IndexMissing``), ``what`` failing."""
    try:
        yield
    except NotFoundError as exc:
        raise IndexMissing(f"Elasticsearch {what}: index not found ({exc.message})") from exc
    except ApiError as exc:
        status, reason = described(exc)
        raise SearchUnavailable(f"Elasticsearch {what} failed ({status}): {reason}") from exc
    except TransportError as exc:
        raise SearchUnavailable(f"Elasticsearch {what} failed: {type(exc).__name__}: {exc.message}") from exc


def answer_bodies(responses: list) -> list[dict[str, Any]]:
    """The JSON bodies of an ``_msearch``'s responses (``elasticsearch.dsl`` wraps them)."""
    return [response.to_dict() for response in responses]


TIMED_OUT = "a shard timed out"


def shortfall(responses: Iterable[Mapping[str, Any]]) -> str | None:
    """Why search responses are not whole (None: every shard of every search answered in time);
    a failed shard is named before a timeout (only a failure is made again)."""
    timed_out = False
    for response in responses:
        shards = response.get("_shards") or {}
        if shards.get("failed"):
            return f"{shards['failed']} of {shards.get('total', '?')} shards failed"
        timed_out = timed_out or bool(response.get("timed_out"))
    return TIMED_OUT if timed_out else None


def described(exc: ApiError) -> tuple[int, str]:
    """An API error's status and reason; an ``_msearch`` item's error comes with the whole request's
    meta (200) and no message: its own status and reason are in its body."""
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error")
    reason = (error.get("reason") or error.get("type")) if isinstance(error, dict) else None
    return int(body.get("status") or exc.meta.status), str(reason or exc.message)


def _server_side(exc: ApiError) -> str | None:
    """Why a search failed, when the server may answer it the next time (None: a 4xx, final)."""
    status, reason = described(exc)
    return f"failed ({status}): {reason}" if status >= 500 or status == 429 else None


def _failed_again(search: str, first: str, exc: ApiError) -> None:
    SEARCH_PARTIAL.labels(search, "failed").inc()
    logger.warning("Elasticsearch %s failed twice (%s, then %s)", search, first, _server_side(exc) or exc.message)


def _settled(search: str, first: str, again: str | None) -> bool:
    SEARCH_PARTIAL.labels(search, "partial" if again else "whole").inc()
    if again:
        logger.warning("Elasticsearch %s partial twice (%s, then %s): serving the shards that answered",
                       search, first, again)  # fmt: skip
    else:
        logger.warning("Elasticsearch %s whole when made again (the first try: %s)", search, first)
    return again is None


def _timed_out(search: str) -> bool:
    SEARCH_PARTIAL.labels(search, "not_retried").inc()
    logger.warning("Elasticsearch %s: %s (ES_TIMEOUT); serving the shards that answered", search, TIMED_OUT)
    return False


async def searched(
    search: str, run: Callable[[], Awaitable[T]], responses: Callable[[T], Iterable[Mapping[str, Any]]]
) -> tuple[T, bool]:
    """``run()``'s answer and whether it is whole, made a second time when the first was partial or
    failed on the server. The second one's error is raised."""
    try:
        answer = await run()
    except ApiError as exc:
        if (first := _server_side(exc)) is None:
            raise
    else:
        if (first := shortfall(responses(answer))) is None:
            return answer, True
        if first == TIMED_OUT:  # made again it would wait as long, on an engine already slow
            return answer, _timed_out(search)
    try:
        answer = await run()
    except ApiError as exc:
        _failed_again(search, first, exc)
        raise
    return answer, _settled(search, first, shortfall(responses(answer)))
