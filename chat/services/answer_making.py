"""How an answer's text is made: by the model (streamed), or without it (curated, extractive, not-found).

A mixin of the answer pipeline's run (``answer_pipeline._Run``): these steps read the run's
state (what was stored, the channel, the options) and record on its ``Outcome``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

import numpy as np

from chat import checkpoints
from chat.answering.extractive import extractive_answer
from chat.answering.relevance import nothing_relevant
from chat.config import AnswerConfig
from chat.gateway.types import CachedAnswer
from chat.models import AnswerMode, Conversation, Message
from chat.prompt import Prompt, PromptTooLong, Source, build_prompt, estimate_tokens, number_sources
from chat.services.answer_plan import Plan
from chat.services.answer_store import Outcome, Stored
from chat.types import ChatEvent, ChatOptions, End, Sources, Token
from inference import services as inference
from inference.config import GroupConfig
from inference.types import GenerationParams, StreamEnd, TokenDelta
from knowledge import services as knowledge
from knowledge.types import SearchFilters
from monitoring import tracing
from monitoring.metrics import NON_MODEL_ANSWERS

log = logging.getLogger(__name__)

# A whole answer (cached, or made without the model) streams in pieces of about this many characters.
REPLAY_CHARS = 24
# The ``model`` recorded on answers made without one.
CURATED, EXTRACTIVE, NOT_FOUND = "curated", "extractive", "not-found"


class AnswerMaking:
    stored: Stored | None
    options: ChatOptions
    channel: str
    served_name: str

    def _ms(self, at: float | None = None) -> int:
        raise NotImplementedError

    def _finish(self, outcome: Outcome) -> Coroutine[Any, Any, None] | None:
        """Record the answer now; return its writes to await (None: nothing to write)."""
        raise NotImplementedError

    def _end(self, outcome: Outcome) -> End:
        """The End event of a finished answer."""
        return End(
            status=outcome.status,
            content=outcome.content,
            citations=outcome.citations,
            usage={
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "total_tokens": outcome.prompt_tokens + outcome.completion_tokens,
            },
            latency={"ttft_ms": outcome.ttft_ms, "total_ms": outcome.total_ms},
            model=outcome.model,
            model_group=self.served_name,
            finish_reason=outcome.finish_reason,
            cached=outcome.cached,
            conversation_id=self.stored.conversation_id if self.stored else None,
            message_id=self.stored.message_id if self.stored else None,
        )

    async def _replay(self, cached: CachedAnswer) -> AsyncIterator[ChatEvent]:
        """A cached answer, streamed in the chunks it was first streamed in (or, when those are not
        known, in fixed-size pieces); stored like any answer, ``cached=True``."""
        sent = 0
        try:
            yield Sources([dict(c) for c in cached.citations])
            # A caller that wants the whole answer at once (stream=False) gets it as one piece: the
            # chunks would only be joined again, one event each.
            for piece in replay_pieces(cached) if self.options.stream else [cached.content]:
                yield Token(piece)
                sent += len(piece)
        except (asyncio.CancelledError, GeneratorExit):
            partial = Outcome(status=Message.Status.PARTIAL, content=cached.content[:sent], cached=True)
            writes = self._finish(partial)
            if writes is not None:
                await asyncio.shield(quietly(writes))
            raise
        outcome = Outcome(
            status=Message.Status.COMPLETE,
            content=cached.content,
            citations=list(cached.citations),
            model=cached.model,
            prompt_tokens=cached.prompt_tokens,
            completion_tokens=cached.completion_tokens,
            ttft_ms=self._ms(),
            cached=True,
        )
        writes = self._finish(outcome)
        if writes is not None:
            await writes
        yield self._end(outcome)

    def _prompt(self, plan: Plan, sources: list[Source], window: int, max_tokens: int) -> Prompt:
        return build_prompt(
            system_prompt=plan.system_prompt,
            question=plan.question,
            history=plan.history,
            sources=sources,
            with_sources=plan.with_sources,
            context_window=window,
            max_tokens=max_tokens,
            history_budget=plan.history_budget,
        )

    def _upstream(
        self, prompt: Prompt, params: GenerationParams, parts: list[str], group: GroupConfig | None = None
    ) -> AsyncIterator[TokenDelta | StreamEnd]:
        """The model's answer: the streaming generator of the inference layer (or a whole answer as one).

        ``group``: the model group whose endpoints answer (None: every generation endpoint).
        """
        affinity = str(self.stored.conversation_id) if self.stored else None
        model = group.name if group is not None else None
        if self.stored:
            # The text so far is saved every CHAT_CHECKPOINT_S, with the other streaming answers'.
            checkpoints.track(self.stored.message_id, parts)
        if not self.options.stream:
            return _whole_answer(prompt.messages, params=params, affinity_key=affinity, model=model)
        return inference.generate_stream(
            prompt.messages,
            params=params,
            affinity_key=affinity,
            # A conversation's text may arrive merged under load; OpenAI clients get every chunk.
            coalesce=self.channel != Conversation.Channel.OPENAI,
            model=model,
        )

    def _record_end(self, outcome: Outcome, end: StreamEnd | None, ttft: float | None) -> None:
        """What the model's last event says: finish reason, model, endpoint, usage, time to first token."""
        outcome.status = Message.Status.COMPLETE
        outcome.finish_reason = end.finish_reason if end else None
        outcome.model = end.model if end else ""
        outcome.endpoint = end.endpoint if end else ""
        usage = end.usage if end else None
        outcome.prompt_tokens = usage.prompt_tokens if usage and usage.prompt_tokens else 0
        outcome.completion_tokens = usage.completion_tokens if usage and usage.completion_tokens else 0
        outcome.ttft_ms = self._ms(ttft) if ttft is not None else None

    def _fixed_reply(self, plan: Plan, mode: str, sources: list[Source]) -> tuple[str, str] | None:
        """(text, model) of an answer made without the model, or None: ask the model."""
        if not plan.with_sources:
            return None
        cfg = plan.cfg
        if mode == AnswerMode.EXTRACTIVE:
            quoted = extractive_answer(plan.question, sources)
            return (quoted, EXTRACTIVE) if quoted else (cfg.not_found_message, NOT_FOUND)
        if nothing_relevant(plan.question, sources, cfg.relevance_floor):
            return cfg.not_found_message, NOT_FOUND
        return None

    def _say(self, text: str, parts: list[str], outcome: Outcome, *, model: str) -> int:
        """Record a whole answer made without the model; returns its (estimated) tokens."""
        parts.append(text)
        outcome.status = Message.Status.COMPLETE
        outcome.finish_reason = "stop"
        outcome.model = model
        outcome.ttft_ms = self._ms()
        NON_MODEL_ANSWERS.labels(model).inc()
        return estimate_tokens(text)

    async def _question_vector(self, plan: Plan) -> np.ndarray | None:
        """The question's embedding, computed once for curated replies and retrieval (None: not needed, or down)."""
        if not plan.with_sources:
            return None
        # Traced as retrieval's embedding step, though it runs before it: one vector serves both.
        with tracing.span("retrieval.embed_query"):
            try:
                return await inference.embed_query(plan.question)
            except Exception as exc:  # retrieval degrades to lexical search; curated replies are skipped
                log.warning("question embedding failed: %s", exc)
                return None

    async def _retrieve(self, plan: Plan, cfg: AnswerConfig, vector: np.ndarray | None) -> list[Source]:
        try:
            chunks = await knowledge.retrieve(
                plan.question,
                filters=SearchFilters(collection_ids=plan.search_ids),
                top_k=cfg.top_k,
                rerank=cfg.rerank_enabled,
                vector=vector,
            )
        except Exception as exc:  # documented degradation: answer without sources
            log.warning("retrieval failed, answering without sources: %s", exc)
            return []
        return number_sources(chunks)


def replay_pieces(cached: CachedAnswer) -> list[str]:
    """A cached answer's text in the chunks it was streamed in (``CachedAnswer.chunks``), else ``pieces``."""
    if not cached.chunks:
        return pieces(cached.content)
    text, out, at = cached.content, [], 0
    for n in cached.chunks:
        out.append(text[at : at + n])
        at += n
    return out


def pieces(text: str) -> list[str]:
    """A whole answer in stream-sized pieces (REPLAY_CHARS each), as a cached answer is replayed."""
    return [text[i : i + REPLAY_CHARS] for i in range(0, len(text), REPLAY_CHARS)] or [""]


async def _whole_answer(
    messages: Sequence[Any], *, params: GenerationParams, affinity_key: str | None, model: str | None
) -> AsyncIterator[TokenDelta | StreamEnd]:
    """``inference.generate`` (one non-streaming upstream call) in the shape of a stream."""
    done = await inference.generate(messages, params=params, affinity_key=affinity_key, model=model)
    if done.text:
        yield TokenDelta(done.text)
    yield StreamEnd(
        finish_reason=done.finish_reason,
        usage=done.usage,
        model=done.model,
        endpoint=done.endpoint,
        duration_s=done.duration_s,
    )


def too_long(plan: Plan, window: int, max_tokens: int) -> str | None:
    """Why the question (with the system prompt) cannot fit ``window``, or None when it fits."""
    try:
        build_prompt(
            system_prompt=plan.system_prompt,
            question=plan.question,
            with_sources=plan.with_sources,
            context_window=window,
            max_tokens=max_tokens,
            history_budget=0,
        )
    except PromptTooLong as exc:
        return str(exc)
    return None


async def quietly(awaitable: Any) -> None:
    """Await a bookkeeping step whose failure must not turn an answer into an error."""
    try:
        await awaitable
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("chat bookkeeping step failed")
