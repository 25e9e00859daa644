"""The chat service: the one request path every adapter uses (websocket, REST/SSE, OpenAI).

    validate -> gateway.admit (rate limit + cache lookup, one round trip)
      -> store the question and an empty answer row   (before generation: nothing lost)
      -> retrieve -> build the prompt -> generate (stream)
      -> cite ([n] -> sources) -> store the answer (one write) -> history to Redis
      -> gateway.settle + cache_put

``reply`` (a conversation turn) and ``complete`` (an OpenAI-style stateless
request, optionally stored) are async generators of ``chat.types`` events. They
never raise for domain problems: a refusal is an ``Error`` event. If the
consumer stops early (client gone, stop pressed: the generator is closed or its
task cancelled), the partial answer is stored with status ``partial`` and the
upstream request is closed. The token loop does no database work: the answer
row is written once at the end (plus, every CHAT_CHECKPOINT_S, a checkpoint of
the text so far, written with the other streaming answers' by chat.checkpoints).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from chat import access, checkpoints, selectors
from chat import history as chat_history
from chat.asyncdb import db
from chat.config import AnswerConfig, get_config
from chat.errors import (
    AuthenticationRequired,
    ContextLengthExceeded,
    InternalError,
    NotFound,
    PlatformError,
    ValidationFailed,
    from_inference,
)
from chat.gateway import services as gateway
from chat.gateway.services import Admission, CachedAnswer, Subject
from chat.models import Conversation, Feedback, Message
from chat.prompt import (
    Prompt,
    PromptTooLong,
    Source,
    Turn,
    build_prompt,
    estimate_tokens,
    map_citations,
    sources_from_chunks,
)
from chat.types import ChatEvent, End, Error, Owner, Sources, Start, Token
from inference import services as inference
from inference.errors import InferenceError, StreamInterrupted
from inference.types import GenerationParams, StreamEnd, TokenDelta
from knowledge import services as knowledge
from knowledge.types import SearchFilters
from monitoring.metrics import CHAT_RESPONSES

log = logging.getLogger(__name__)

TITLE_CHARS = 80
# A cached answer is replayed as a stream in pieces of about this many characters.
REPLAY_CHARS = 24


@dataclass(frozen=True, slots=True)
class ChatOptions:
    """Per-request choices on top of ChatSettings (None: the settings decide)."""

    retrieval: bool | None = None
    # Collections to search (ids or slugs); None: the conversation's, else all the caller may read.
    collections: tuple[int | str, ...] | None = None
    # Who the knowledge app checks read access for: a user, AnonymousUser or an API-key principal.
    principal: Any = None
    # Generation parameters a caller may set (validated at the edge): temperature,
    # top_p, max_tokens, stop, seed, presence_penalty, frequency_penalty.
    params: dict[str, Any] = field(default_factory=dict)
    model: str | None = None
    # False: the caller wants the whole answer at once (a non-streaming OpenAI request), so the
    # upstream is asked without streaming too: one JSON body instead of an SSE event per token.
    stream: bool = True


# --- conversations, messages, feedback (plain writes for the REST adapter) -------------


def conversation_create(*, owner: Owner, title: str = "", channel: str = Conversation.Channel.WEB,
                        collection_ids: Sequence[int] = ()) -> Conversation:  # fmt: skip
    if not owner.is_known:
        raise AuthenticationRequired()
    return Conversation.objects.create(
        user_id=owner.user_id,
        session_key="" if owner.user_id is not None else owner.session_key,
        title=title[:200],
        channel=channel,
        collection_ids=list(collection_ids),
    )


def conversation_delete(*, owner: Owner, conversation_id: uuid.UUID | str) -> uuid.UUID:
    conversation = selectors.conversation_get(owner=owner, conversation_id=conversation_id)
    if conversation is None:
        raise NotFound("No such conversation.")
    cid = conversation.pk
    conversation.delete()
    return cid


def feedback_set(*, owner: Owner, message_id: int, rating: str, comment: str = "") -> Feedback:
    """Rate an answer; a second call by the same person updates the first."""
    if rating not in Feedback.Rating.values:
        raise ValidationFailed("Rating must be up or down.", fields={"rating": ["Must be up or down."]})
    message = selectors.message_get(owner=owner, message_id=message_id)
    if message is None or message.role != Message.Role.ASSISTANT:
        raise NotFound("No such answer.")
    who = {"user_id": owner.user_id} if owner.user_id is not None else {"user": None, "session_key": owner.session_key}
    for _attempt in range(2):  # a concurrent first vote may win the insert: then update it
        try:
            with transaction.atomic():
                feedback, _ = Feedback.objects.update_or_create(
                    message=message, **who, defaults={"rating": rating, "comment": comment[:2000]}
                )
            return feedback
        except IntegrityError:
            continue
    raise InternalError("Could not store the feedback.")


# --- the request path ---------------------------------------------------------------


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
    return run.events(lambda: run.prepare_reply(content, conversation_id, regenerate), store=True)


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
    return run.events(lambda: run.prepare_complete(messages, store), store=store)


async def reply_once(**kwargs: Any) -> End | Error:
    """``reply`` collected into its final event (for non-streaming callers)."""
    return await collect(reply(**kwargs))


async def collect(events: AsyncIterator[ChatEvent]) -> End | Error:
    last: End | Error | None = None
    async with aclosing(events) as stream:
        async for event in stream:
            if isinstance(event, End | Error):
                last = event
    assert last is not None, "an answer always ends with End or Error"
    return last


@dataclass(slots=True)
class _Stored:
    conversation_id: uuid.UUID
    message_id: int
    user_message_id: int | None
    new_conversation: bool
    # What the conversation row says now: the final write touches it only when these change.
    model: str = ""
    endpoint: str = ""


@dataclass(slots=True)
class _Plan:
    system_prompt: str | None
    with_sources: bool
    history: list[Turn]
    history_budget: int
    scope: tuple[int, ...]  # the collections asked for (stored on the conversation; () = all readable)
    search_ids: tuple[int, ...]  # what retrieval may search (scope or all readable); () = nothing
    conversation: Conversation | None = None


class _Run:
    """One answer's state from validation to the final write."""

    def __init__(self, *, subject: Subject, options: ChatOptions, channel: str) -> None:
        self.subject = subject
        self.owner = Owner.of(subject)
        self.options = options
        self.channel = channel
        self.started = time.perf_counter()
        self.cfg: AnswerConfig | None = None
        self.admission: Admission | None = None
        self.cache_key: str | None = None
        self.stored: _Stored | None = None
        self.question = ""
        self.regenerate = False
        self.usage = (0, 0)  # what settle() charges: prompt, completion tokens

    # -- validation: raise PlatformError, touch nothing ------------------------------------

    async def prepare_reply(self, content: str, conversation_id: uuid.UUID | str | None, regenerate: bool) -> _Plan:
        if not self.owner.is_known:
            raise AuthenticationRequired()
        self.cfg = cfg = await get_config()
        conversation = None
        history: list[Turn] = []
        if conversation_id is not None:
            conversation = await db(selectors.conversation_get)(owner=self.owner, conversation_id=conversation_id)
            if conversation is None:
                raise NotFound("No such conversation.")
        if regenerate:
            if conversation is None:
                raise ValidationFailed("Regenerate needs a conversation_id.")
            turns = [Turn(t["role"], t["content"]) for t in await db(_turns_for_regenerate)(conversation.pk)]
            last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
            if last_user is None:
                raise ValidationFailed("There is no question to answer again.")
            content, history = turns[last_user].content, turns[:last_user]
        elif conversation is not None:
            history = await chat_history.load_history(conversation.pk)
        if not content or not content.strip():
            raise ValidationFailed("The message is empty.", fields={"content": ["Must not be blank."]})
        self.question = content.strip()
        self.regenerate = regenerate
        requested = self.options.collections
        if requested is None and conversation is not None and conversation.collection_ids:
            requested = tuple(conversation.collection_ids)
        with_sources = cfg.retrieval_enabled if self.options.retrieval is None else self.options.retrieval
        scope, search_ids = await self._scope(requested, with_sources)
        return _Plan(
            system_prompt=cfg.system_prompt,
            with_sources=with_sources,
            history=history,
            history_budget=cfg.history_token_budget,
            scope=scope,
            search_ids=search_ids,
            conversation=conversation,
        )

    async def _scope(
        self, requested: tuple[int | str, ...] | None, with_sources: bool
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        if not with_sources:
            return (), ()
        readable = await access.readable(self.options.principal)
        search_ids = readable.resolve(requested)
        return (search_ids if requested else ()), search_ids

    async def prepare_complete(self, messages: Sequence[dict[str, str]], store: bool) -> _Plan:
        self.cfg = cfg = await get_config()
        system = "\n\n".join(m["content"].strip() for m in messages if m["role"] == "system" and m["content"].strip())
        turns = [Turn(m["role"], m["content"]) for m in messages if m["role"] != "system"]
        last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
        if last_user is None or not turns[last_user].content.strip():
            raise ValidationFailed("At least one non-empty user message is required.")
        if store and not self.owner.is_known:
            raise AuthenticationRequired("Storing needs an identified caller.")
        self.question = turns[last_user].content
        retrieval = cfg.retrieval_enabled if self.options.retrieval is None else self.options.retrieval
        if retrieval:
            system = f"{cfg.system_prompt}\n\n{system}" if system else cfg.system_prompt
        scope, search_ids = await self._scope(self.options.collections, retrieval)
        return _Plan(
            system_prompt=system or None,
            with_sources=retrieval,
            history=turns[:last_user],
            # The caller chose its history; only the context window limits it.
            history_budget=cfg.context_window,
            scope=scope,
            search_ids=search_ids,
        )

    # -- the shared path ---------------------------------------------------------------

    async def events(self, prepare: Any, *, store: bool) -> AsyncIterator[ChatEvent]:
        try:
            plan: _Plan = await prepare()
            cfg = self.cfg
            assert cfg is not None
            params = self._params(cfg)
            max_tokens = params.max_tokens or cfg.max_tokens
            try:
                # Refuse a question that cannot fit before anything is charged or stored.
                build_prompt(
                    system_prompt=plan.system_prompt,
                    question=self.question,
                    with_sources=plan.with_sources,
                    context_window=cfg.context_window,
                    max_tokens=max_tokens,
                    history_budget=0,
                )
            except PromptTooLong as exc:
                raise ContextLengthExceeded(str(exc)) from None
        except PlatformError as exc:
            yield Error(exc)
            return

        self.cache_key = gateway.cache_key_for(
            subject=self.subject,
            model=self.options.model or "",
            messages=[
                *({"role": t.role, "content": t.content} for t in plan.history),
                {"role": "user", "content": self.question},
            ],
            context_ids=list(plan.scope),
            params={
                "system": plan.system_prompt or "",
                "retrieval": plan.with_sources,
                "top_k": cfg.top_k,
                "rerank": cfg.rerank_enabled,
                "settings": cfg.fingerprint,
                "temperature": params.temperature,
                "max_tokens": max_tokens,
                "top_p": params.top_p,
                "stop": params.stop,
                "seed": params.seed,
                **params.extra,
            },
            # Signed-in callers may read private collections: their answers are theirs alone.
            private_context=plan.with_sources and not self.subject.is_anonymous,
        )
        try:
            admission = await gateway.admit(self.subject, cache_key=self.cache_key)
        except PlatformError as exc:  # anonymous chat disabled, or Redis down with fail-closed limits
            yield Error(exc)
            return
        if not admission.allowed:
            yield Error(admission.as_error())
            return
        self.admission = admission
        try:
            if store:
                try:
                    self.stored = await db(_store_start)(
                        owner=self.owner,
                        conversation=plan.conversation,
                        question=self.question,
                        regenerate=self.regenerate,
                        channel=self.channel,
                        collection_ids=list(plan.scope),
                    )
                except PlatformError as exc:  # e.g. the conversation was deleted meanwhile
                    yield Error(exc)
                    return
                if self.regenerate:
                    await chat_history.drop_history(self.stored.conversation_id)
            cid = self.stored.conversation_id if self.stored else None
            mid = self.stored.message_id if self.stored else None
            if admission.cached is not None:
                yield Start(cid, mid, model=admission.cached.model, cached=True)
                inner = self._replay(admission.cached)
            else:
                yield Start(cid, mid, model=self.options.model or "")
                inner = self._generate(plan, cfg, params, max_tokens)
            # aclosing: if our consumer stops, the inner generator is finalised now (partial stored).
            async with aclosing(inner) as stream:
                async for event in stream:
                    yield event
        finally:
            await _quietly(asyncio.shield(self._settle()))

    async def _replay(self, cached: CachedAnswer) -> AsyncIterator[ChatEvent]:
        """A cached answer, streamed in pieces (stored like any answer, ``cached=True``)."""
        sent = 0
        try:
            yield Sources([dict(c) for c in cached.citations])
            for sent in range(0, len(cached.content), REPLAY_CHARS):
                yield Token(cached.content[sent : sent + REPLAY_CHARS])
        except (asyncio.CancelledError, GeneratorExit):
            partial = _Outcome(status=Message.Status.PARTIAL, content=cached.content[:sent], cached=True)
            await asyncio.shield(_quietly(self._finish(partial)))
            raise
        outcome = _Outcome(
            status=Message.Status.COMPLETE,
            content=cached.content,
            citations=list(cached.citations),
            model=cached.model,
            prompt_tokens=cached.prompt_tokens,
            completion_tokens=cached.completion_tokens,
            ttft_ms=self._ms(),
            cached=True,
        )
        await self._finish(outcome)
        yield self._end(outcome)

    async def _generate(
        self, plan: _Plan, cfg: AnswerConfig, params: GenerationParams, max_tokens: int
    ) -> AsyncIterator[ChatEvent]:
        sources: list[Source] = []
        parts: list[str] = []
        deltas = 0  # upstream pieces (about one token each) received
        outcome = _Outcome(status=Message.Status.PARTIAL, content="")
        try:
            if plan.with_sources and plan.search_ids:
                sources = await self._retrieve(cfg, plan.search_ids)
            history_budget = plan.history_budget
            prompt: Prompt = build_prompt(
                system_prompt=plan.system_prompt,
                question=self.question,
                history=plan.history,
                sources=sources,
                with_sources=plan.with_sources,
                context_window=cfg.context_window,
                max_tokens=max_tokens,
                history_budget=history_budget,
            )
            sources = prompt.sources
            outcome.citations = map_citations("", sources)
            yield Sources(outcome.citations)

            end: StreamEnd | None = None
            ttft: float | None = None
            affinity = str(self.stored.conversation_id) if self.stored else None
            if self.stored:
                # The text so far is saved every CHAT_CHECKPOINT_S, with the other streaming answers'.
                checkpoints.track(self.stored.message_id, parts)
            # aclosing: however this loop ends, the upstream stream is closed (its HTTP request cancelled).
            upstream = (
                inference.generate_stream(
                    prompt.messages,
                    params=params,
                    affinity_key=affinity,
                    # A conversation's text may arrive merged under load; OpenAI clients get every chunk.
                    coalesce=self.channel != Conversation.Channel.OPENAI,
                )
                if self.options.stream
                else _whole_answer(prompt.messages, params=params, affinity_key=affinity)
            )
            async with aclosing(upstream) as stream:
                async for event in stream:
                    if type(event) is TokenDelta:
                        if ttft is None:
                            ttft = time.perf_counter()
                        parts.append(event.text)
                        # A streamed delta is about one token; a whole answer is estimated.
                        deltas += event.pieces if self.options.stream else estimate_tokens(event.text)
                        yield Token(event.text)
                    elif isinstance(event, StreamEnd):
                        end = event
            outcome.status = Message.Status.COMPLETE
            outcome.finish_reason = end.finish_reason if end else None
            outcome.model = end.model if end else ""
            outcome.endpoint = end.endpoint if end else ""
            usage = end.usage if end else None
            outcome.prompt_tokens = usage.prompt_tokens if usage and usage.prompt_tokens else prompt.estimated_tokens
            outcome.completion_tokens = usage.completion_tokens if usage and usage.completion_tokens else deltas
            outcome.ttft_ms = self._ms(ttft) if ttft is not None else None
        except (asyncio.CancelledError, GeneratorExit):
            # Client gone or stop pressed: keep what was streamed, then let the cancel proceed.
            outcome.status = Message.Status.PARTIAL
            outcome.content = "".join(parts)
            outcome.completion_tokens = deltas
            outcome.citations = map_citations(outcome.content, sources)
            await asyncio.shield(_quietly(self._finish(outcome)))
            raise
        except InferenceError as exc:
            text = "".join(parts) or (exc.partial_text if isinstance(exc, StreamInterrupted) else "")
            outcome.status = Message.Status.PARTIAL if text else Message.Status.ERROR
            outcome.error = from_inference(exc)
            parts = [text]
        except PromptTooLong as exc:
            outcome.status = Message.Status.ERROR
            outcome.error = ContextLengthExceeded(str(exc))
        except Exception as exc:
            log.exception("chat answer failed")
            outcome.status = Message.Status.PARTIAL if parts else Message.Status.ERROR
            outcome.error = InternalError(f"The answer failed ({type(exc).__name__}).")

        outcome.content = "".join(parts)
        outcome.citations = map_citations(outcome.content, sources)
        if outcome.completion_tokens == 0:
            outcome.completion_tokens = deltas if outcome.error is None else estimate_tokens(outcome.content)
        await asyncio.shield(self._finish(outcome))
        if outcome.error is not None:
            yield Error(
                outcome.error, message_id=self.stored.message_id if self.stored else None, partial=outcome.content
            )
        else:
            yield self._end(outcome)

    # -- stages ------------------------------------------------------------------------

    async def _retrieve(self, cfg: AnswerConfig, collection_ids: tuple[int, ...]) -> list[Source]:
        try:
            chunks = await knowledge.retrieve(
                self.question,
                filters=SearchFilters(collection_ids=collection_ids),
                top_k=cfg.top_k,
                rerank=cfg.rerank_enabled,
            )
        except Exception as exc:  # documented degradation: answer without sources
            log.warning("retrieval failed, answering without sources: %s", exc)
            return []
        return sources_from_chunks(chunks)

    def _params(self, cfg: AnswerConfig) -> GenerationParams:
        p = dict(self.options.params)
        extra = {k: p.pop(k) for k in ("presence_penalty", "frequency_penalty") if k in p}
        return GenerationParams(
            max_tokens=p.get("max_tokens") or cfg.max_tokens,
            temperature=p.get("temperature", cfg.temperature),
            top_p=p.get("top_p"),
            stop=p.get("stop"),
            seed=p.get("seed"),
            extra=extra,
        )

    async def _finish(self, outcome: _Outcome) -> None:
        """The final write (one UPDATE, see _store_finish), Redis history, and the cache entry of a complete answer."""
        outcome.total_ms = self._ms()
        CHAT_RESPONSES.labels("cached" if outcome.cached else str(outcome.status)).inc()
        if self.stored:
            checkpoints.untrack(self.stored.message_id)
            await db(_store_finish)(self.stored, outcome)
            if not self.regenerate:
                items = []
                if self.stored.user_message_id is not None:
                    items.append({"id": self.stored.user_message_id, "role": "user", "content": self.question})
                items.append({"id": self.stored.message_id, "role": "assistant", "content": outcome.content})
                await chat_history.append_history(self.stored.conversation_id, items, new=self.stored.new_conversation)
        if outcome.status == Message.Status.COMPLETE and self.cache_key and not outcome.cached and outcome.content:
            await _quietly(
                gateway.cache_put(
                    self.cache_key,
                    CachedAnswer(
                        content=outcome.content,
                        citations=outcome.citations,
                        model=outcome.model,
                        prompt_tokens=outcome.prompt_tokens,
                        completion_tokens=outcome.completion_tokens,
                    ),
                )
            )
        self.usage = (outcome.prompt_tokens, 0 if outcome.cached else outcome.completion_tokens)

    async def _settle(self) -> None:
        if self.admission is None:
            return
        prompt_tokens, completion_tokens = self.usage
        admission, self.admission = self.admission, None
        await gateway.settle(self.subject, admission, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)

    def _end(self, outcome: _Outcome) -> End:
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
            finish_reason=outcome.finish_reason,
            cached=outcome.cached,
            conversation_id=self.stored.conversation_id if self.stored else None,
            message_id=self.stored.message_id if self.stored else None,
        )

    def _ms(self, at: float | None = None) -> int:
        return round(((at if at is not None else time.perf_counter()) - self.started) * 1000)


@dataclass(slots=True)
class _Outcome:
    status: str
    content: str
    citations: list[dict[str, Any]] = field(default_factory=list)
    model: str = ""
    endpoint: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: int | None = None
    total_ms: int | None = None
    cached: bool = False
    error: PlatformError | None = None


async def _whole_answer(
    messages: Sequence[Any], *, params: GenerationParams, affinity_key: str | None
) -> AsyncIterator[TokenDelta | StreamEnd]:
    """``inference.generate`` (one non-streaming upstream call) in the shape of a stream."""
    done = await inference.generate(messages, params=params, affinity_key=affinity_key)
    if done.text:
        yield TokenDelta(done.text)
    yield StreamEnd(
        finish_reason=done.finish_reason,
        usage=done.usage,
        model=done.model,
        endpoint=done.endpoint,
        duration_s=done.duration_s,
    )


async def _quietly(awaitable: Any) -> None:
    """Await a bookkeeping step whose failure must not turn an answer into an error."""
    try:
        await awaitable
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("chat bookkeeping step failed")


# --- database steps (each as few round trips as possible, run off the event loop) ------


def _title(question: str) -> str:
    first = " ".join(question.split())
    return first if len(first) <= TITLE_CHARS else first[: TITLE_CHARS - 1].rstrip() + "…"


def _store_start(
    *,
    owner: Owner,
    conversation: Conversation | None,
    question: str,
    regenerate: bool,
    channel: str,
    collection_ids: list[int],
) -> _Stored:
    """Store the question and an empty answer row before anything is generated.

    Every answer pays for this and for ``_store_finish``, so they are kept to the fewest
    round trips (each ORM statement costs about a millisecond of CPU here): a question in a
    conversation is one UPDATE of the conversation and one INSERT of both messages, without
    a transaction (if the INSERT failed, the conversation's updated_at moved, nothing else).
    """
    new = conversation is None
    with transaction.atomic() if new or regenerate else contextlib.nullcontext():
        if conversation is None:
            conversation = conversation_create(
                owner=owner, title=_title(question), channel=channel, collection_ids=collection_ids
            )
            cid = conversation.pk
        else:
            cid = conversation.pk
            # Touch the conversation and title it if it has no title yet, in one statement.
            updated = Conversation.objects.filter(pk=cid).update(
                updated_at=timezone.now(),
                title=Case(When(title="", then=Value(_title(question))), default=F("title")),
            )
            if not updated:
                raise NotFound("No such conversation.")
        user_message_id = None
        if regenerate:
            last_user = (
                Message.objects.filter(conversation_id=cid, role=Message.Role.USER)
                .order_by("-created_at", "-id")
                .first()
            )
            if last_user is not None:
                Message.objects.filter(
                    conversation_id=cid, role=Message.Role.ASSISTANT, superseded=False, id__gt=last_user.pk
                ).update(superseded=True)
            answer = Message.objects.create(
                conversation_id=cid, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING
            )
        else:
            # One INSERT; the ids come back in order (question first, as created_at and id sort).
            try:
                question_row, answer = Message.objects.bulk_create(
                    [
                        Message(conversation_id=cid, role=Message.Role.USER, content=question),
                        Message(conversation_id=cid, role=Message.Role.ASSISTANT, status=Message.Status.STREAMING),
                    ]
                )
            except IntegrityError:  # the conversation was deleted since the UPDATE above
                raise NotFound("No such conversation.") from None
            user_message_id = question_row.pk
    return _Stored(
        conversation_id=cid,
        message_id=answer.pk,
        user_message_id=user_message_id,
        new_conversation=new,
        model=conversation.model,
        endpoint=conversation.endpoint,
    )


def _store_finish(stored: _Stored, outcome: _Outcome) -> None:
    """The answer row, in one UPDATE; the conversation row only when its model or endpoint changed.

    The conversation's ``updated_at`` was set when the question was stored.
    """
    changes: dict[str, Any] = {}
    if outcome.model and outcome.model[:200] != stored.model:
        changes["model"] = outcome.model[:200]
    if outcome.endpoint and outcome.endpoint[:200] != stored.endpoint:
        changes["endpoint"] = outcome.endpoint[:200]
    with transaction.atomic() if changes else contextlib.nullcontext():
        Message.objects.filter(pk=stored.message_id).update(
            content=outcome.content,
            status=outcome.status,
            error_code=outcome.error.code if outcome.error else "",
            citations=outcome.citations,
            model=outcome.model[:200],
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            ttft_ms=outcome.ttft_ms,
            total_ms=outcome.total_ms,
            cached=outcome.cached,
        )
        if changes:
            Conversation.objects.filter(pk=stored.conversation_id).update(**changes, updated_at=timezone.now())


def _turns_for_regenerate(conversation_id: uuid.UUID) -> list[dict[str, str]]:
    return selectors.recent_turns(conversation_id=conversation_id, limit=settings.CHAT_HISTORY_MAX_MESSAGES)
