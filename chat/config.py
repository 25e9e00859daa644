"""The ChatSettings row as an immutable snapshot, cached per process.

The request path reads the snapshot (no database query per request while it is
fresh, none per token ever). Saving the row in this process invalidates it at
once; other processes pick the change up within CHAT_SETTINGS_TTL_S.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings

from chat.asyncdb import db
from inference.services import generation_context_window


@dataclass(frozen=True, slots=True)
class AnswerConfig:
    system_prompt: str
    retrieval_enabled: bool
    top_k: int
    rerank_enabled: bool
    history_token_budget: int
    context_window_setting: int | None  # ChatSettings.context_window (None: ask the inference layer)
    temperature: float
    max_tokens: int

    @property
    def context_window(self) -> int:
        """The admin's value, else the generation endpoints' smallest window, else CHAT_CONTEXT_WINDOW."""
        return self.context_window_setting or generation_context_window() or settings.CHAT_CONTEXT_WINDOW

    @property
    def fingerprint(self) -> str:
        """Changes whenever an answer-shaping setting changes (part of the response-cache key)."""
        raw = repr((self.system_prompt, self.top_k, self.rerank_enabled, self.context_window_setting))
        return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


_cached: tuple[float, AnswerConfig] | None = None


def invalidate() -> None:
    global _cached
    _cached = None


def _load() -> AnswerConfig:
    from chat.models import ChatSettings

    row, _ = ChatSettings.objects.get_or_create(pk=1)
    return AnswerConfig(
        system_prompt=row.system_prompt,
        retrieval_enabled=row.retrieval_enabled,
        top_k=max(1, row.top_k),
        rerank_enabled=row.rerank_enabled,
        history_token_budget=row.history_token_budget,
        context_window_setting=row.context_window,
        temperature=row.temperature,
        max_tokens=max(1, row.max_tokens),
    )


def get_config_sync() -> AnswerConfig:
    global _cached
    now = time.monotonic()
    if _cached is None or _cached[0] <= now:
        _cached = (now + settings.CHAT_SETTINGS_TTL_S, _load())
    return _cached[1]


async def get_config() -> AnswerConfig:
    """The current snapshot; reads the row only when the cached one is older than the TTL."""
    cached = _cached
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    return await db(get_config_sync)()
