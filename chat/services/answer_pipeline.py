"""The answer pipeline: the one request path every adapter uses (websocket, REST/SSE, OpenAI).

    plan (validate, scope)  -> cache key -> gateway.admit (rate limit + cache lookup, one round trip)
      -> store the question and an empty answer row   (before generation: nothing lost)
      -> replay the cached answer, or: retrieve -> build the prompt -> generate (stream)
      -> cite ([n] -> sources) -> store the answer (one write) -> history to Redis
      -> gateway.settle + cache_put

``reply`` (a conversation turn) and ``complete`` (an OpenAI-style stateless request,
optionally stored) are async generators of ``chat.types`` events. They never raise for
domain problems: a refusal is an ``Error`` event. If the consumer stops early (client
gone, stop pressed: the generator is closed or its task cancelled), the partial answer
is stored with status ``partial`` and the upstream request is closed. The token loop
does no database work: the answer row is written once at the end (plus, every
CHAT_CHECKPOINT_S, a checkpoint of the text so far, written with the other streaming
answers' by chat.checkpoints).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import aclosing
from typing import Any

from django.db import InterfaceError, OperationalError

from chat import history as chat_history
from chat.answering.curated import best_match
from chat.answering.extractive import extractive_answer
from chat.asyncdb import db
from chat.errors import ContextLengthExceeded, InternalError, PlatformError, StorageUnavailable
from chat.gateway import services as gateway
from chat.gateway.types import Admission, Subject
from chat.models import AnswerMode, Conversation, Message
from chat.prompt import Prompt, PromptTooLong, Source, estimate_tokens, map_citations
from chat.services.answer_making import CURATED, EXTRACTIVE, NOT_FOUND, AnswerMaking, pieces, quietly, too_long
from chat.services.answer_plan import Plan, cache_key, generation_params, prepare_complete, prepare_reply
from chat.services.answer_store import Outcome, Stored, store_start
from chat.services.answer_writes import write_answer
from chat.services.model_routing import (
    Candidate,
    ModelChoice,
    admit_routed,
    count_fallback,
    count_model_answer,
    falls_back,
    model_choose,
    route_plan,
)
from chat.types import ChatEvent, ChatOptions, End, Error, Owner, Routed, Sources, Start, Token
from inference.config import GroupConfig
from inference.errors import InferenceError, StreamInterrupted
from inference.types import GenerationParams, StreamEnd, TokenDelta
from monitoring import tracing
from monitoring.metrics import CHAT_ERRORS, CHAT_RESPONSES, CURATED_REPLIES

log = logging.getLogger(__name__)


def reply(
    *,
    subject: Subject,
    content: str,
    conversation_id: uuid.UUID | str | None = None,
    regenerate: bool = False,
    channel: str = Conversation.Channel.WEB,
    options: ChatOptions | None = None,
) -> AsyncIterator[ChatEvent]:
    """Answer ``content`` in a conversation (a new one when ``conversation_id`` is None).

    ``regenerate=True`` answers the conversation's last question again (``content`` is
    ignored); the earlier answer is kept but marked superseded.
    """
    run = _Run(subject=subject, options=options or ChatOptions(), channel=channel)
    return run.events(
        lambda: prepare_reply(
            owner=run.owner,
            options=run.options,
            content=content,
            conversation_id=conversation_id,
            regenerate=regenerate,
        ),
        store=True,
    )


def complete(
    *,
    subject: Subject,
    messages: Sequence[dict[str, str]],
    store: bool = False,
    options: ChatOptions | None = None,
) -> AsyncIterator[ChatEvent]:
    """An OpenAI-style request: the caller sends the whole conversation.

    Retrieval adds the platform's system prompt and sources in front of the caller's
    messages; with retrieval off the messages go to the model as they are. ``store``
    keeps the exchange as a new conversation (channel openai).
    """
    run = _Run(subject=subject, options=options or ChatOptions(), channel=Conversation.Channel.OPENAI)
    return run.events(lambda: prepare_complete(owner=run.owner, options=run.options, messages=messages, store=store),
                      store=store)  # fmt: skip


async def collect(events: AsyncIterator[ChatEvent]) -> End | Error:
    """The final event of an answer (for non-streaming callers)."""
    last: End | Error | None = None
    async with aclosing(events) as stream:
        async for event in stream:
            if isinstance(event, End | Error):
                last = event
    assert last is not None, "an answer always ends with End or Error"
    return last


class _Run(AnswerMaking):
    """One answer's state from the admission to the final write."""

    def __init__(self, *, subject: Subject, options: ChatOptions, channel: str) -> None:
        self.subject = subject
        self.owner = Owner.of(subject)
        self.options = options
        self.channel = channel
        self.started = time.perf_counter()
        self.plan: Plan | None = None
        self.admission: Admission | None = None
        self.cache_key: str | None = None
        self.stored: Stored | None = None
        self.usage = (0, 0)  # what settle() charges: prompt, completion tokens
        self.choice = ModelChoice("", None)
        self.candidates: list[Candidate] = []  # the admitted group, then its fallbacks for a failure
        self.served: GroupConfig | None = None  # the model group answering (the one asked, or a fallback)
        self.served_name = ""
        self.fell_back = False

    def _serve(self, candidate: Candidate, reason: str) -> None:
        """``candidate`` answers from now on: the name the answer reports and its usage is counted under."""
        self.served = candidate.group
        self.served_name = candidate.group.name if candidate.group is not None else self.choice.asked
        self.fell_back = candidate.group is not self.choice.group
        if self.fell_back:
            count_fallback(self.choice.group, candidate.group, reason)
        if self.admission is not None:
            # Usage rows and metric labels take group names only, never a name a client made up.
            self.admission.usage.model = candidate.group.name if candidate.group is not None else ""

    async def events(self, prepare: Callable[[], Awaitable[Plan]], *, store: bool) -> AsyncIterator[ChatEvent]:
        try:
            plan = self.plan = await prepare()
            cfg = plan.cfg
            params = generation_params(cfg, self.options)
            max_tokens = params.max_tokens or cfg.max_tokens
            choice = self.choice = await model_choose(self.subject, self.options.model, default=cfg.default_model)
            # Refuse a question that fits no model before anything is charged or stored; a group
            # too small for it gives way to a fallback that fits (model_routing.route_plan).
            candidates = route_plan(
                choice, window_of=cfg.window_for, fits=lambda window: too_long(plan, window, max_tokens) is None
            )
            if not candidates:
                raise ContextLengthExceeded(too_long(plan, cfg.window_for(choice.group), max_tokens))
        except PlatformError as exc:
            yield _failed(exc)
            return

        keys: dict[str, str | None] = {}

        def key_of(candidate: Candidate) -> str | None:
            model = candidate.group.name if candidate.group is not None else choice.asked
            if model not in keys:  # a sha256 of the whole prompt: once per model
                keys[model] = cache_key(self.subject, self.options, plan, params, max_tokens, model=model)
            return keys[model]

        try:
            index, admission = await admit_routed(self.subject, candidates, key_of)
        except PlatformError as exc:  # anonymous chat disabled, or Redis down with fail-closed limits
            yield _failed(exc)
            return
        if not admission.allowed:
            yield _failed(admission.as_error())
            return
        self.admission = admission
        self.candidates = candidates[index:]
        self.cache_key = key_of(self.candidates[0])
        self._serve(self.candidates[0], "limits" if index else self.candidates[0].reason)
        try:
            if store:
                try:
                    self.stored = await db(store_start)(
                        owner=self.owner,
                        conversation=plan.conversation,
                        question=plan.question,
                        regenerate=plan.regenerate,
                        channel=self.channel,
                        collection_ids=list(plan.scope),
                    )
                except PlatformError as exc:  # e.g. the conversation was deleted meanwhile
                    yield _failed(exc)
                    return
                except (OperationalError, InterfaceError):  # unreachable: nothing stored, nothing generated (503)
                    yield _failed(StorageUnavailable("Your message could not be saved; try again in a few seconds."))
                    return
                if plan.regenerate:
                    await chat_history.drop_history(self.stored.conversation_id)
            cid = self.stored.conversation_id if self.stored else None
            mid = self.stored.message_id if self.stored else None
            if admission.cached is not None:
                yield Start(cid, mid, model=admission.cached.model, cached=True, headers=admission.headers())
                inner = self._replay(admission.cached)
            else:
                yield Start(cid, mid, model=self.served_name, headers=admission.headers())
                inner = self._generate(plan, params, max_tokens)
            # aclosing: if our consumer stops, the inner generator is finalised now (partial stored).
            async with aclosing(inner) as stream:
                async for event in stream:
                    yield event
        finally:
            await quietly(asyncio.shield(self._settle()))

    async def _generate(self, plan: Plan, params: GenerationParams, max_tokens: int) -> AsyncIterator[ChatEvent]:
        cfg = plan.cfg
        sources: list[Source] = []
        parts: list[str] = []
        deltas = 0  # upstream pieces (about one token each) received
        outcome = Outcome(status=Message.Status.PARTIAL, content="")
        # A streamed answer's chunk lengths, for the response cache's replay (not a whole answer's:
        # it was never split, and a stream replaying it gets fixed-size pieces).
        chunks: list[int] | None = [] if self.options.stream else None
        mode = self.options.answer_mode or cfg.answer_mode
        curated = None
        try:
            vector = await self._question_vector(plan)
            curated = await best_match(vector, cfg.curated_threshold)
            if curated is not None:
                CURATED_REPLIES.inc()
                outcome.citations = curated.citations()
                yield Sources(outcome.citations)
                deltas = self._say(curated.text, parts, outcome, model=CURATED)
                for piece in pieces(curated.text):
                    yield Token(piece)
            else:
                if plan.with_sources and plan.search_ids:
                    sources = await self._retrieve(plan, cfg, vector)
                retrieved = sources
                with tracing.span("chat.prompt") as span:  # no yield inside: the span stays in this block
                    prompt: Prompt = self._prompt(plan, retrieved, self.candidates[0].context_window, max_tokens)
                    if span.is_recording():
                        span.set_attributes(
                            {"chat.prompt_tokens": prompt.estimated_tokens, "chat.sources": len(prompt.sources)}
                        )
                sources = prompt.sources
                outcome.citations = map_citations("", sources)
                yield Sources(outcome.citations)
                fixed = self._fixed_reply(plan, mode, sources)
                if fixed is None:
                    try:
                        end: StreamEnd | None = None
                        ttft: float | None = None
                        for n, candidate in enumerate(self.candidates):
                            if n:  # the previous group failed before its first token: its fallback answers
                                self._serve(candidate, "error")
                                yield Routed(self.served_name)
                                if candidate.context_window != self.candidates[n - 1].context_window:
                                    prompt = self._prompt(plan, retrieved, candidate.context_window, max_tokens)
                                    sources = prompt.sources
                            try:
                                # The upstream generator itself, looped here: no generator layer per token
                                # (docs/performance.md). aclosing: however the loop ends, its request is closed.
                                async with aclosing(self._upstream(prompt, params, parts, candidate.group)) as stream:
                                    async for event in stream:
                                        if type(event) is TokenDelta:
                                            if ttft is None:
                                                ttft = time.perf_counter()
                                            parts.append(event.text)
                                            if chunks is not None:
                                                chunks.append(len(event.text))
                                            # A streamed delta is about one token; a whole answer is estimated.
                                            deltas += (
                                                event.pieces if self.options.stream else estimate_tokens(event.text)
                                            )
                                            yield Token(event.text)
                                        elif isinstance(event, StreamEnd):
                                            end = event
                                break
                            except InferenceError as exc:
                                if parts or n == len(self.candidates) - 1 or not falls_back(exc):
                                    raise
                                log.warning("model %s failed before its first token (%s); trying its fallback",
                                            self.served_name, exc.code)  # fmt: skip
                        self._record_end(outcome, end, ttft)
                        outcome.model = self.served_name or outcome.model
                        outcome.chunks = chunks
                    except InferenceError:
                        if parts or mode != AnswerMode.GENERATIVE_FALLBACK or not plan.with_sources:
                            raise
                        # The model is unavailable before its first word: quote the sources instead.
                        log.warning("generation unavailable; answering extractively")
                        quoted = extractive_answer(plan.question, sources)
                        fixed = (quoted, EXTRACTIVE) if quoted else (cfg.not_found_message, NOT_FOUND)
                if fixed is not None:
                    text, model = fixed
                    deltas = self._say(text, parts, outcome, model=model)
                    for piece in pieces(text):
                        yield Token(piece)
                outcome.prompt_tokens = outcome.prompt_tokens or prompt.estimated_tokens
                outcome.completion_tokens = outcome.completion_tokens or deltas
        except (asyncio.CancelledError, GeneratorExit):
            # Client gone or stop pressed: keep what was streamed, then let the cancel proceed.
            outcome.status = Message.Status.PARTIAL
            outcome.content = "".join(parts)
            outcome.completion_tokens = deltas
            if curated is None:
                outcome.citations = map_citations(outcome.content, sources)
            writes = self._finish(outcome)
            if writes is not None:
                await asyncio.shield(quietly(writes))
            raise
        except InferenceError as exc:
            text = "".join(parts) or (exc.partial_text if isinstance(exc, StreamInterrupted) else "")
            outcome.status = Message.Status.PARTIAL if text else Message.Status.ERROR
            outcome.error = exc
            parts = [text]
        except PromptTooLong as exc:
            outcome.status = Message.Status.ERROR
            outcome.error = ContextLengthExceeded(str(exc))
        except Exception:
            log.exception("chat answer failed")
            outcome.status = Message.Status.PARTIAL if parts else Message.Status.ERROR
            outcome.error = InternalError()  # generic: the detail is in the log line above (same request id)

        outcome.content = "".join(parts)
        if curated is None:
            outcome.citations = map_citations(outcome.content, sources)
        if outcome.completion_tokens == 0:
            outcome.completion_tokens = deltas if outcome.error is None else estimate_tokens(outcome.content)
        writes = self._finish(outcome)
        if writes is not None:
            await asyncio.shield(writes)
        if outcome.error is not None:
            yield _failed(
                outcome.error, message_id=self.stored.message_id if self.stored else None, partial=outcome.content
            )
        else:
            yield self._end(outcome)

    def _finish(self, outcome: Outcome) -> Coroutine[Any, Any, None] | None:
        """The answer's figures and usage, now; its writes (``write_answer``) as a coroutine to
        shield, or None when there are none (an answer neither stored nor cached: most of the
        OpenAI-compatible API's, whose shield was a task per request)."""
        outcome.total_ms = self._ms()
        CHAT_RESPONSES.labels("cached" if outcome.cached else str(outcome.status)).inc()
        # Set before the writes: a cancelled request settles while its shielded writes go on.
        self.usage = (outcome.prompt_tokens, 0 if outcome.cached else outcome.completion_tokens)
        if self.admission is not None:
            self.admission.usage.error = outcome.error is not None
            self.admission.usage.latency_ms = outcome.total_ms or 0
        if self.served is not None:
            count_model_answer(self.served.name, outcome)
        # A curated reply is not cached: it is as cheap as a cache hit, and an operator's edit applies at once.
        # Nor is a fallback's answer: it was not the model asked for (its key's).
        reusable = (
            outcome.status == Message.Status.COMPLETE
            and not outcome.cached
            and outcome.model != CURATED
            and not self.fell_back
        )
        cache_key = self.cache_key if reusable and outcome.content else None
        if not self.stored and not cache_key:
            return None
        return write_answer(
            outcome,
            stored=self.stored,
            plan=self.plan,
            cache_key=cache_key,
            cache_generation=self.admission.cache_generation if self.admission else None,
        )

    async def _settle(self) -> None:
        if self.admission is None:
            return
        prompt_tokens, completion_tokens = self.usage
        admission, self.admission = self.admission, None
        await gateway.settle(self.subject, admission, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def _ms(self, at: float | None = None) -> int:
        return round(((at if at is not None else time.perf_counter()) - self.started) * 1000)


def _failed(err: PlatformError, **kwargs: Any) -> Error:
    """The Error event of an answer, counted once here for every adapter (``chat_errors_total``)."""
    CHAT_ERRORS.labels(err.code).inc()
    return Error(err, **kwargs)
