"""Value types exchanged between the inference layer and its callers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Literal["system", "user", "assistant"]
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class GenerationParams:
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] | None = None
    seed: int | None = None
    # Anything else the OpenAI API accepts and the endpoint allows (passed through).
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenDelta:
    """One streamed piece of the answer."""

    text: str
    # Upstream events (about one token each) merged into this piece; see ``coalesce``
    # in inference.services.generate_stream.
    pieces: int = 1


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class StreamEnd:
    """Last event of a stream: why it finished, token usage and timing."""

    finish_reason: str | None
    usage: Usage
    model: str
    endpoint: str
    ttft_s: float | None = None
    duration_s: float = 0.0


StreamEvent = TokenDelta | StreamEnd


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str | None
    usage: Usage
    model: str
    endpoint: str
    duration_s: float = 0.0
