"""Searches that only some shards answered: searched once more, then served as they are.

Elasticsearch answers a search whose shards did not all answer with 200 and the hits of the
shards that did (``allow_partial_search_results`` defaults to true). While a node dies that
happens to a search even though a replica holds every hit: the query phase moves on to another
copy of a shard, but the later phases (kNN's query after its dfs phase, every fetch) go back
to the copy that answered first, and fail with it. The same search made again a moment later
is whole. So: one more try. A search still partial after it (both copies of a shard gone: a
red index, or a shard timing out) is served as it is, logged and counted: the shards that
answered still hold true sources, and no sources at all would be the worse answer.
``knowledge_search_partial_total{search, after_retry}`` counts both outcomes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

from monitoring.metrics import SEARCH_PARTIAL

logger = logging.getLogger(__name__)

T = TypeVar("T")


def shortfall(responses: Iterable[Mapping[str, Any]]) -> str | None:
    """Why search responses are not whole (None: every shard of every search answered in time)."""
    for response in responses:
        shards = response.get("_shards") or {}
        if shards.get("failed"):
            return f"{shards['failed']} of {shards.get('total', '?')} shards failed"
        if response.get("timed_out"):
            return "a shard timed out"
    return None


def _settled(search: str, first: str, again: str | None) -> bool:
    SEARCH_PARTIAL.labels(search, "partial" if again else "whole").inc()
    if again:
        logger.warning("Elasticsearch %s partial twice (%s, then %s): serving the shards that answered",
                       search, first, again)  # fmt: skip
    else:
        logger.info("Elasticsearch %s was partial (%s); whole when made again", search, first)
    return again is None


async def searched(
    search: str, run: Callable[[], Awaitable[T]], responses: Callable[[T], Iterable[Mapping[str, Any]]]
) -> tuple[T, bool]:
    """``run()``'s answer and whether it is whole, made a second time when the first was partial."""
    answer = await run()
    first = shortfall(responses(answer))
    if first is None:
        return answer, True
    answer = await run()
    return answer, _settled(search, first, shortfall(responses(answer)))


def searched_sync(
    search: str, run: Callable[[], T], responses: Callable[[T], Iterable[Mapping[str, Any]]]
) -> tuple[T, bool]:
    """``searched`` for the synchronous client."""
    answer = run()
    first = shortfall(responses(answer))
    if first is None:
        return answer, True
    answer = run()
    return answer, _settled(search, first, shortfall(responses(answer)))
