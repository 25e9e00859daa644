"""Value types of the chat service: who is asking, and the events an answer is made of.

Every adapter (websocket, REST/SSE, OpenAI-compatible) consumes the same event
stream from ``chat.services`` and renders it with its ``chat.renderers`` module::

    Start -> Sources -> Token* -> End        (an answer, complete or not)
    Error                                    (refused before anything was stored)
    Start -> Sources? -> Token* -> Error     (failed midway; the partial answer is stored)

``Routed`` may come before the first Token: the model group named in Start failed before
its first token and one of its fallbacks answers instead (renderers that show the model
name switch to it; others ignore the event).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from chat.errors import PlatformError
from chat.gateway.types import Subject


@dataclass(frozen=True, slots=True)
class Owner:
    """Whose conversations these are: a user, else a session (anonymous chat or a user-less API key)."""

    user_id: int | None = None
    session_key: str | None = None

    @property
    def is_known(self) -> bool:
        return self.user_id is not None or bool(self.session_key)

    @classmethod
    def of(cls, subject: Subject) -> Owner:
        if subject.user_id is not None:
            return cls(user_id=subject.user_id)
        if subject.session_key:
            return cls(session_key=subject.session_key)
        if subject.api_key_id is not None:
            return cls(session_key=f"apikey:{subject.api_key_id}")
        return cls()


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
    # The model (group name or alias) asked for; None: ChatSettings' default model.
    model: str | None = None
    # False: the caller wants the whole answer at once (a non-streaming OpenAI request), so the
    # upstream is asked without streaming too: one JSON body instead of an SSE event per token.
    stream: bool = True
    # generative | extractive | generative_fallback; None: ChatSettings (then CHAT_ANSWER_MODE).
    answer_mode: str | None = None


# --- events -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    conversation_id: uuid.UUID | None  # None: a stateless (OpenAI, store=false) request
    message_id: int | None
    model: str = ""
    cached: bool = False
    # The admission's X-RateLimit-* and X-Budget-* headers, for adapters that answer over HTTP.
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Sources:
    sources: list[dict[str, Any]]  # numbered, as Source.as_dict()


@dataclass(frozen=True, slots=True)
class Token:
    text: str


@dataclass(frozen=True, slots=True)
class Routed:
    model: str  # the fallback model group that answers from now on


@dataclass(frozen=True, slots=True)
class End:
    status: str  # complete | partial
    content: str
    citations: list[dict[str, Any]]
    usage: dict[str, int]  # prompt_tokens, completion_tokens, total_tokens
    latency: dict[str, int | None]  # ttft_ms, total_ms
    model: str = ""  # what made the answer: a model group, or extractive / not-found / curated
    model_group: str = ""  # the model group that served the request (a fallback's when one answered)
    finish_reason: str | None = None
    cached: bool = False
    conversation_id: uuid.UUID | None = None
    message_id: int | None = None


@dataclass(frozen=True, slots=True)
class Error:
    error: PlatformError
    # Set when the failure came after Start: what was stored.
    message_id: int | None = None
    partial: str = ""

    @property
    def code(self) -> str:
        return self.error.code


ChatEvent = Start | Sources | Routed | Token | End | Error
