"""The ChatSettings row as an immutable snapshot, cached per process.

The request path reads the snapshot (no database query per request while it is
fresh, none per token ever). Saving the row in this process invalidates it at
once (a ``post_save`` receiver connected in ``ChatConfig.ready``); other processes
pick the change up within CHAT_SETTINGS_TTL_S. While the database is unreachable the
last snapshot keeps serving (``config.local_cache``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError

from chat.asyncdb import db
from config.local_cache import MISSING, LocalCache
from inference.config import GroupConfig
from inference.services import generation_context_window, model_group_context_window


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
    answer_mode: str  # an AnswerMode value (blank in the row: CHAT_ANSWER_MODE)
    not_found_message: str
    relevance_floor: float
    curated_threshold: float
    default_model: str = ""  # ChatSettings.default_model's name ("": the environment's model)
    # Changes whenever an answer-shaping setting changes (part of the response-cache key).
    # Computed once per snapshot (a snapshot serves every request while it is fresh).
    fingerprint: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = repr(
            (
                self.system_prompt,
                self.top_k,
                self.rerank_enabled,
                self.context_window_setting,
                self.answer_mode,
                self.not_found_message,
                self.relevance_floor,
                self.default_model,
            )
        )
        object.__setattr__(self, "fingerprint", hashlib.blake2b(raw.encode(), digest_size=8).hexdigest())

    @property
    def context_window(self) -> int:
        """The admin's value, else the generation endpoints' smallest window, else CHAT_CONTEXT_WINDOW."""
        return self.context_window_setting or generation_context_window() or settings.CHAT_CONTEXT_WINDOW

    def window_for(self, group: GroupConfig | None) -> int:
        """A model group's context window: its own (or its endpoints'), else the admin's, else CHAT_CONTEXT_WINDOW.

        No group (none configured): ``context_window``, as before groups existed.
        """
        if group is None:
            return self.context_window
        return model_group_context_window(group) or self.context_window_setting or settings.CHAT_CONTEXT_WINDOW


_snapshot: LocalCache[str, AnswerConfig] = LocalCache(
    "chat_settings", ttl=lambda: settings.CHAT_SETTINGS_TTL_S, maxsize=1
)
_KEY = "chat_settings"


def invalidate(**_signal_kwargs: Any) -> None:
    """Forget the snapshot (also the ``post_save`` receiver of ChatSettings)."""
    _snapshot.clear()


def _load() -> AnswerConfig:
    from chat.models import ChatSettings

    row, _ = ChatSettings.objects.select_related("default_model").get_or_create(pk=1)
    return AnswerConfig(
        system_prompt=row.system_prompt,
        retrieval_enabled=row.retrieval_enabled,
        top_k=max(1, row.top_k),
        rerank_enabled=row.rerank_enabled,
        history_token_budget=row.history_token_budget,
        context_window_setting=row.context_window,
        temperature=row.temperature,
        max_tokens=max(1, row.max_tokens),
        answer_mode=row.answer_mode or settings.CHAT_ANSWER_MODE,
        not_found_message=row.not_found_message,
        relevance_floor=row.relevance_floor,
        curated_threshold=row.curated_threshold,
        default_model=row.default_model.name if row.default_model is not None else "",
    )


def get_config_sync() -> AnswerConfig:
    return _snapshot.get_or_load(_KEY, _load, fallback_on=(DatabaseError,))


async def get_config() -> AnswerConfig:
    """The current snapshot; reads the row only when the cached one is older than the TTL."""
    cached = _snapshot.get(_KEY)
    if cached is not MISSING:
        return cached
    # One reload shared by concurrent requests; with a snapshot at hand, none waits on a hung database.
    return await _snapshot.aget_or_load(_KEY, db(_load), fallback_on=(DatabaseError,))
