"""Before an answer: validate the request and decide what the answer is made of (a ``Plan``).

Raises ``PlatformError`` and touches nothing: no limit is charged, no row written.
``prepare_reply`` serves a conversation turn (the platform keeps the history),
``prepare_complete`` an OpenAI-style request (the caller sends the whole conversation).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from chat import access, selectors
from chat import history as chat_history
from chat.asyncdb import db
from chat.config import AnswerConfig, get_config
from chat.errors import AuthenticationRequired, NotFound, ValidationFailed
from chat.gateway import services as gateway
from chat.gateway.types import Subject
from chat.models import Conversation
from chat.prompt import Turn
from chat.services.answer_store import turns_for_regenerate
from chat.types import ChatOptions, Owner
from inference.types import GenerationParams


@dataclass(slots=True)
class Plan:
    cfg: AnswerConfig
    question: str
    system_prompt: str | None
    with_sources: bool
    history: list[Turn]
    history_budget: int
    scope: tuple[int, ...]  # the collections asked for (stored on the conversation; () = all readable)
    search_ids: tuple[int, ...]  # what retrieval may search (scope or all readable); () = nothing
    conversation: Conversation | None = None
    regenerate: bool = False


async def _scope(
    options: ChatOptions, requested: tuple[int | str, ...] | None, with_sources: bool
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if not with_sources:
        return (), ()
    readable = await access.readable(options.principal)
    search_ids = readable.resolve(requested)
    return (search_ids if requested else ()), search_ids


async def prepare_reply(
    *,
    owner: Owner,
    options: ChatOptions,
    content: str,
    conversation_id: uuid.UUID | str | None,
    regenerate: bool,
) -> Plan:
    if not owner.is_known:
        raise AuthenticationRequired()
    cfg = await get_config()
    conversation = None
    history: list[Turn] = []
    if conversation_id is not None:
        conversation = await db(selectors.conversation_get)(owner=owner, conversation_id=conversation_id)
        if conversation is None:
            raise NotFound("No such conversation.")
    if regenerate:
        if conversation is None:
            raise ValidationFailed("Regenerate needs a conversation_id.")
        turns = [Turn(t["role"], t["content"]) for t in await db(turns_for_regenerate)(conversation.pk)]
        last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
        if last_user is None:
            raise ValidationFailed("There is no question to answer again.")
        content, history = turns[last_user].content, turns[:last_user]
    elif conversation is not None:
        history = await chat_history.load_history(conversation.pk)
    if not content or not content.strip():
        raise ValidationFailed("The message is empty.", fields={"content": ["Must not be blank."]})
    requested = options.collections
    if requested is None and conversation is not None and conversation.collection_ids:
        requested = tuple(conversation.collection_ids)
    with_sources = cfg.retrieval_enabled if options.retrieval is None else options.retrieval
    scope, search_ids = await _scope(options, requested, with_sources)
    return Plan(
        cfg=cfg,
        question=content.strip(),
        system_prompt=cfg.system_prompt,
        with_sources=with_sources,
        history=history,
        history_budget=cfg.history_token_budget,
        scope=scope,
        search_ids=search_ids,
        conversation=conversation,
        regenerate=regenerate,
    )


async def prepare_complete(
    *, owner: Owner, options: ChatOptions, messages: Sequence[dict[str, str]], store: bool
) -> Plan:
    cfg = await get_config()
    system = "\n\n".join(m["content"].strip() for m in messages if m["role"] == "system" and m["content"].strip())
    turns = [Turn(m["role"], m["content"]) for m in messages if m["role"] != "system"]
    last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=None)
    if last_user is None or not turns[last_user].content.strip():
        raise ValidationFailed("At least one non-empty user message is required.")
    if store and not owner.is_known:
        raise AuthenticationRequired("Storing needs an identified caller.")
    retrieval = cfg.retrieval_enabled if options.retrieval is None else options.retrieval
    if retrieval:
        system = f"{cfg.system_prompt}\n\n{system}" if system else cfg.system_prompt
    scope, search_ids = await _scope(options, options.collections, retrieval)
    return Plan(
        cfg=cfg,
        question=turns[last_user].content,
        system_prompt=system or None,
        with_sources=retrieval,
        history=turns[:last_user],
        # The caller chose its history; only the context window limits it.
        history_budget=cfg.context_window,
        scope=scope,
        search_ids=search_ids,
    )


def generation_params(cfg: AnswerConfig, options: ChatOptions) -> GenerationParams:
    """The caller's generation parameters (validated at the edge) over the admin's defaults."""
    p = dict(options.params)
    extra = {k: p.pop(k) for k in ("presence_penalty", "frequency_penalty") if k in p}
    return GenerationParams(
        max_tokens=p.get("max_tokens") or cfg.max_tokens,
        temperature=p.get("temperature", cfg.temperature),
        top_p=p.get("top_p"),
        stop=p.get("stop"),
        seed=p.get("seed"),
        extra=extra,
    )


def cache_key(
    subject: Subject, options: ChatOptions, plan: Plan, params: GenerationParams, max_tokens: int, *, model: str
) -> str | None:
    """The response-cache key of this answer by ``model`` (a group name: an alias shares its entries);
    None: not reusable. See ``gateway.cache_key_for``."""
    cfg = plan.cfg
    return gateway.cache_key_for(
        subject=subject,
        model=model,
        messages=[
            *({"role": t.role, "content": t.content} for t in plan.history),
            {"role": "user", "content": plan.question},
        ],
        # What retrieval may search (not only what was asked for): a collection hidden from the
        # caller changes the key. Changed documents are caught by the index generation (admit).
        context_ids=list(plan.search_ids),
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
            "mode": options.answer_mode or cfg.answer_mode,
            **params.extra,
        },
        # Signed-in callers may read private collections: their answers are theirs alone.
        private_context=plan.with_sources and not subject.is_anonymous,
    )
