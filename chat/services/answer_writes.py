"""What a finished answer writes: its row (one UPDATE), its conversation's Redis history, and
its response-cache entry. Run shielded by the answer pipeline, and only when there is one of
them to write (``_Run._finish``)."""

from __future__ import annotations

from django.db import InterfaceError, OperationalError

from chat import checkpoints
from chat import history as chat_history
from chat.asyncdb import db
from chat.gateway import services as gateway
from chat.gateway.types import CachedAnswer
from chat.services import answer_recovery
from chat.services.answer_making import quietly
from chat.services.answer_plan import Plan
from chat.services.answer_store import Outcome, Stored, store_finish
from monitoring import tracing


@tracing.span("chat.final_write")
async def write_answer(
    outcome: Outcome,
    *,
    stored: Stored | None,
    plan: Plan | None,
    cache_key: str | None,
    cache_generation: int | None,
) -> None:
    """The final write (see store_finish) and the history of a stored answer; the cache entry
    when ``cache_key`` is given (a complete answer that may be reused)."""
    if stored:
        checkpoints.untrack(stored.message_id)
        try:
            await db(store_finish)(stored, outcome)
        except (OperationalError, InterfaceError):
            # The database is unreachable, and the user has the answer: write it when the
            # database is back (chat.services.answer_recovery; history refills then).
            answer_recovery.defer(stored, outcome)
        else:
            answer_recovery.start_sweeper()
            await _append_history(stored, plan, outcome)
    if cache_key:
        await quietly(
            gateway.cache_put(
                cache_key,
                CachedAnswer(
                    content=outcome.content,
                    citations=outcome.citations,
                    model=outcome.model,
                    prompt_tokens=outcome.prompt_tokens,
                    completion_tokens=outcome.completion_tokens,
                    chunks=tuple(outcome.chunks) if outcome.chunks else None,
                ),
                generation=cache_generation,
            )
        )


async def _append_history(stored: Stored, plan: Plan | None, outcome: Outcome) -> None:
    """The exchange onto the conversation's Redis history (not for a regenerated answer)."""
    if plan and plan.regenerate:
        return
    items = []
    question = plan.question if plan else ""
    if stored.user_message_id is not None:
        items.append({"id": stored.user_message_id, "role": "user", "content": question})
    items.append({"id": stored.message_id, "role": "assistant", "content": outcome.content})
    await chat_history.append_history(stored.conversation_id, items, new=stored.new_conversation)
