"""Request validation at the edge, before anything costly (no Redis, no database, no model).

One entry point per input kind, shared by every adapter:

- ``parse_json_body(body)``: raw HTTP body -> dict (413 when too large, 400 when not JSON).
- ``validate_chat_request(payload, openai=...)``: a chat request (the OpenAI endpoint's
  ``/v1/chat/completions`` body, or the platform's REST/websocket chat payload).
- ``validate_user_message(content)``: one user message (websocket frame, REST message).

Status codes (the chat/errors.py family, with per-field errors in ``fields``):

- 400 ``ValidationFailed``: malformed: not a JSON object, wrong types, unknown parameters.
- 413 ``PayloadTooLarge``: too big: the body, one message, or all messages together.
- 422 ``UnprocessableRequest``: well-formed but out of bounds (max_tokens over the limit,
  temperature out of range, too many messages, n != 1, unsupported content parts).

Limits come from settings (GATEWAY_MAX_*), read per call so tests can override them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from chat.errors import PayloadTooLarge, UnprocessableRequest, ValidationFailed

# OpenAI chat-completions parameters the platform accepts (anything else is a 400, so a
# client learns at once that e.g. `tools` or `logprobs` is not supported instead of being
# silently ignored). `retrieval` and `collection` are the platform's own extras.
OPENAI_PARAMS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "n",
        "user",
        "presence_penalty",
        "frequency_penalty",
        "retrieval",
        "collection",
        "answer_mode",
    }
)
ANSWER_MODES = ("generative", "extractive", "generative_fallback")
# The platform's REST/websocket chat payload: one `message` (or a `messages` list) plus the
# conversation it continues; the same generation parameters.
PLATFORM_PARAMS = (OPENAI_PARAMS - {"n", "user", "stream_options"}) | {"message", "conversation_id"}

ROLES = frozenset({"system", "user", "assistant"})
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
MAX_USER_CHARS = 256
MAX_MODEL_CHARS = 200
MAX_COLLECTION_CHARS = 100


@dataclass(slots=True)
class ValidatedChatRequest:
    """A chat request that passed validation: normalised, bounded, safe to act on.

    ``params`` holds only generation parameters that were given (temperature, top_p,
    max_tokens, stop (always a list), seed, presence_penalty, frequency_penalty);
    ``max_completion_tokens`` is folded into ``max_tokens``.
    """

    messages: list[dict[str, str]]
    params: dict[str, Any] = field(default_factory=dict)
    stream: bool = False
    retrieval: bool = True
    collection: int | str | None = None
    model: str | None = None
    include_usage: bool = False  # stream_options.include_usage (OpenAI endpoint)
    user: str | None = None  # OpenAI's end-user tag (informational only)
    conversation_id: int | str | None = None  # platform payload only
    answer_mode: str | None = None  # generative | extractive | generative_fallback (None: the settings)
    extra: dict[str, Any] = field(default_factory=dict)  # fields the caller allowed via extra_fields

    @property
    def last_user_message(self) -> str:
        for message in reversed(self.messages):
            if message["role"] == "user":
                return message["content"]
        return ""


def limits() -> dict[str, int]:
    """The configured bounds (also shown in error messages and docs)."""
    return {
        "max_body_bytes": settings.GATEWAY_MAX_BODY_BYTES,
        "max_message_chars": settings.GATEWAY_MAX_MESSAGE_CHARS,
        "max_prompt_chars": settings.GATEWAY_MAX_PROMPT_CHARS,
        "max_messages": settings.GATEWAY_MAX_MESSAGES,
        "max_tokens": settings.GATEWAY_MAX_TOKENS,
    }


def body_too_large(size: int | None) -> PayloadTooLarge:
    """413 for a body over GATEWAY_MAX_BODY_BYTES (``size`` None: not read to its end)."""
    limit = settings.GATEWAY_MAX_BODY_BYTES
    said = f"{size} bytes" if size is not None else f"over {limit} bytes"
    return PayloadTooLarge(f"The request body is {said}; the limit is {limit} bytes.", limit=limit)


def parse_json_body(body: bytes | str) -> dict[str, Any]:
    """The request body as a JSON object; 413 before parsing when it is too large."""
    size = len(body.encode() if isinstance(body, str) else body)
    if size > settings.GATEWAY_MAX_BODY_BYTES:
        raise body_too_large(size)
    try:
        payload = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"The request body is not valid JSON: {exc}.") from None
    if not isinstance(payload, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    return payload


def validate_user_message(content: Any) -> str:
    """One user message: a non-blank string within GATEWAY_MAX_MESSAGE_CHARS. Returns it stripped."""
    if not isinstance(content, str):
        raise ValidationFailed("The message must be a string.", fields={"content": ["Must be a string."]})
    text = content.strip()
    if not text:
        raise ValidationFailed("The message is empty.", fields={"content": ["Must not be blank."]})
    if "\x00" in text:
        raise ValidationFailed("The message contains a NUL character.", fields={"content": ["Contains NUL."]})
    limit = settings.GATEWAY_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise PayloadTooLarge(
            f"The message is {len(text)} characters; the limit is {limit}.",
            fields={"content": [f"At most {limit} characters."]},
            limit=limit,
        )
    return text


def validate_chat_request(payload: Any, *, openai: bool, extra_fields: Iterable[str] = ()) -> ValidatedChatRequest:
    """Validate a chat request; raise ValidationFailed / PayloadTooLarge / UnprocessableRequest.

    ``openai=True``: the ``/v1/chat/completions`` body (``messages`` required, OpenAI's
    parameter allowlist). ``openai=False``: the platform payload (``message`` or ``messages``,
    optional ``conversation_id``). ``extra_fields`` lets an adapter accept more top-level
    keys of its own; their values come back untouched in ``extra``.
    """
    if not isinstance(payload, dict):
        raise ValidationFailed("The request body must be a JSON object.")
    allowed = (OPENAI_PARAMS if openai else PLATFORM_PARAMS) | set(extra_fields)
    unknown = sorted(k for k in payload if k not in allowed)
    if unknown:
        raise ValidationFailed(
            f"Unsupported parameter(s): {', '.join(unknown)}.",
            fields={k: ["Not a supported parameter."] for k in unknown},
        )

    errors = _Errors()
    messages = _messages(payload, openai=openai, errors=errors)
    params = _generation_params(payload, errors=errors)
    stream = _bool(payload, "stream", False, errors)
    include_usage = False
    if openai and payload.get("stream_options") is not None:
        options = payload["stream_options"]
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            errors.bad("stream_options", "Must be an object with only `include_usage`.")
        elif not stream:
            errors.bad("stream_options", "Only allowed when `stream` is true.")
        else:
            include_usage = _bool(options, "include_usage", False, errors, label="stream_options.include_usage")
    if openai and payload.get("n") is not None:
        n = payload["n"]
        if not _is_int(n):
            errors.bad("n", "Must be an integer.")
        elif n != 1:
            errors.bound("n", "Only n=1 is supported.")
    retrieval = _bool(payload, "retrieval", True, errors)
    collection = _collection(payload, errors)
    answer_mode = payload.get("answer_mode")
    if answer_mode is not None and answer_mode not in ANSWER_MODES:
        errors.bad("answer_mode", f"Must be one of {', '.join(ANSWER_MODES)}.")
        answer_mode = None
    model = _short_str(payload, "model", MAX_MODEL_CHARS, errors)
    if openai and "model" in payload and not model:
        errors.bad("model", "Must be a non-empty string.")
    user = _short_str(payload, "user", MAX_USER_CHARS, errors) if openai else None
    conversation_id = None
    if not openai and payload.get("conversation_id") is not None:
        conversation_id = payload["conversation_id"]
        if not (_is_int(conversation_id) or (isinstance(conversation_id, str) and 0 < len(conversation_id) <= 64)):
            errors.bad("conversation_id", "Must be an integer or a short string.")
    errors.raise_if_any()
    return ValidatedChatRequest(
        messages=messages,
        params=params,
        stream=stream,
        retrieval=retrieval,
        collection=collection,
        model=model,
        include_usage=include_usage,
        user=user,
        conversation_id=conversation_id,
        answer_mode=answer_mode,
        extra={k: payload[k] for k in extra_fields if k in payload},
    )


# --- helpers ------------------------------------------------------------------------


class _Errors:
    """Collects field errors so one response lists every problem; the worst kind decides the status."""

    def __init__(self) -> None:
        self.fields: dict[str, list[str]] = {}
        self.kind: type[ValidationFailed] | None = None

    def _add(self, name: str, message: str, kind: type[ValidationFailed]) -> None:
        self.fields.setdefault(name, []).append(message)
        # Malformed input (400) wins over too large (413) over out of bounds (422): fix the
        # shape first, then the size, then the values.
        rank = {ValidationFailed: 0, PayloadTooLarge: 1, UnprocessableRequest: 2}
        if self.kind is None or rank[kind] < rank[self.kind]:
            self.kind = kind

    def bad(self, name: str, message: str) -> None:
        self._add(name, message, ValidationFailed)

    def too_large(self, name: str, message: str) -> None:
        self._add(name, message, PayloadTooLarge)

    def bound(self, name: str, message: str) -> None:
        self._add(name, message, UnprocessableRequest)

    def raise_if_any(self) -> None:
        if self.kind is None:
            return
        first = next(iter(self.fields.items()))
        summary = f"{first[0]}: {first[1][0]}"
        if len(self.fields) > 1:
            summary += f" (and {len(self.fields) - 1} more field error(s))"
        raise self.kind(summary, fields=self.fields)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def _bool(payload: dict, name: str, default: bool, errors: _Errors, *, label: str | None = None) -> bool:
    label = label or name
    value = payload.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        errors.bad(label, "Must be true or false.")
        return default
    return value


def _short_str(payload: dict, name: str, max_len: int, errors: _Errors) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        errors.bad(name, "Must be a string.")
        return None
    if len(value) > max_len:
        errors.bad(name, f"At most {max_len} characters.")
        return None
    return value.strip() or None


def _collection(payload: dict, errors: _Errors) -> int | str | None:
    value = payload.get("collection")
    if value is None:
        return None
    if _is_int(value):
        if value < 1:
            errors.bound("collection", "Must be a positive id.")
        return value
    if isinstance(value, str) and 0 < len(value.strip()) <= MAX_COLLECTION_CHARS:
        return value.strip()
    errors.bad("collection", "Must be a collection id or slug.")
    return None


def _content(value: Any, name: str, errors: _Errors) -> str | None:
    """Message content: a string, or OpenAI's list of text parts (joined)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for i, part in enumerate(value):
            if not isinstance(part, dict) or "type" not in part:
                errors.bad(f"{name}[{i}]", "Must be a content part object with a `type`.")
                return None
            if part["type"] != "text":
                errors.bound(f"{name}[{i}]", f"Content parts of type {part['type']!r} are not supported.")
                return None
            if not isinstance(part.get("text"), str):
                errors.bad(f"{name}[{i}].text", "Must be a string.")
                return None
            texts.append(part["text"])
        return "\n".join(texts)
    errors.bad(name, "Must be a string or a list of text parts.")
    return None


def _messages(payload: dict, *, openai: bool, errors: _Errors) -> list[dict[str, str]]:
    max_chars = settings.GATEWAY_MAX_MESSAGE_CHARS
    if not openai and "message" in payload:
        if "messages" in payload:
            errors.bad("message", "Give either `message` or `messages`, not both.")
            return []
        try:
            return [{"role": "user", "content": validate_user_message(payload["message"])}]
        except ValidationFailed as exc:
            for msg in exc.fields.get("content", [exc.message]):
                errors._add("message", msg, type(exc))
            return []

    raw = payload.get("messages")
    if raw is None:
        errors.bad("messages" if openai else "message", "This field is required.")
        return []
    if not isinstance(raw, list) or not raw:
        errors.bad("messages", "Must be a non-empty list of messages.")
        return []
    if len(raw) > settings.GATEWAY_MAX_MESSAGES:
        errors.bound("messages", f"At most {settings.GATEWAY_MAX_MESSAGES} messages (got {len(raw)}).")
        return []

    messages: list[dict[str, str]] = []
    total = 0
    for i, item in enumerate(raw):
        name = f"messages[{i}]"
        if not isinstance(item, dict):
            errors.bad(name, "Must be an object with `role` and `content`.")
            continue
        role = item.get("role")
        # OpenAI's newer `developer` role is its `system` role under another name.
        role = "system" if role == "developer" else role
        if role not in ROLES:
            errors.bad(f"{name}.role", "Must be one of system, user, assistant.")
            continue
        extra_keys = set(item) - {"role", "content", "name"}
        if extra_keys:
            errors.bad(name, f"Unsupported message field(s): {', '.join(sorted(extra_keys))}.")
            continue
        content = _content(item.get("content"), f"{name}.content", errors)
        if content is None:
            continue
        if "\x00" in content:
            errors.bad(f"{name}.content", "Contains a NUL character.")
            continue
        if len(content) > max_chars:
            errors.too_large(f"{name}.content", f"At most {max_chars} characters (got {len(content)}).")
            continue
        total += len(content)
        messages.append({"role": role, "content": content})
    if total > settings.GATEWAY_MAX_PROMPT_CHARS:
        errors.too_large("messages", f"At most {settings.GATEWAY_MAX_PROMPT_CHARS} characters in all (got {total}).")
    if messages and not any(m["role"] == "user" and m["content"].strip() for m in messages):
        errors.bound("messages", "At least one non-empty user message is required.")
    return messages


def _number(payload: dict, name: str, lo: float, hi: float, errors: _Errors) -> float | None:
    value = payload.get(name)
    if value is None:
        return None
    if not _is_number(value):
        errors.bad(name, "Must be a number.")
        return None
    if not lo <= value <= hi:
        errors.bound(name, f"Must be between {lo:g} and {hi:g}.")
        return None
    return value


def _generation_params(payload: dict, *, errors: _Errors) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, lo, hi in (
        ("temperature", 0.0, 2.0),
        ("top_p", 0.0, 1.0),
        ("presence_penalty", -2.0, 2.0),
        ("frequency_penalty", -2.0, 2.0),
    ):
        value = _number(payload, name, lo, hi, errors)
        if value is not None:
            params[name] = value

    # max_completion_tokens is OpenAI's newer name for max_tokens.
    given = {k: payload[k] for k in ("max_tokens", "max_completion_tokens") if payload.get(k) is not None}
    if len(set(map(repr, given.values()))) > 1:
        errors.bad("max_tokens", "`max_tokens` and `max_completion_tokens` differ; give one.")
    elif given:
        name, value = next(iter(given.items()))
        limit = settings.GATEWAY_MAX_TOKENS
        if not _is_int(value):
            errors.bad(name, "Must be an integer.")
        elif value < 1:
            errors.bound(name, "Must be at least 1.")
        elif value > limit:
            errors.bound(name, f"At most {limit} (got {value}).")
        else:
            params["max_tokens"] = value

    stop = payload.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            errors.bad("stop", "Must be a non-empty string or a list of them.")
        elif len(stops) > MAX_STOP_SEQUENCES or any(len(s) > MAX_STOP_CHARS for s in stops):
            errors.bound("stop", f"At most {MAX_STOP_SEQUENCES} sequences of {MAX_STOP_CHARS} characters.")
        elif stops:
            params["stop"] = stops

    seed = payload.get("seed")
    if seed is not None:
        if not _is_int(seed):
            errors.bad("seed", "Must be an integer.")
        elif not -(2**63) <= seed < 2**63:
            errors.bound("seed", "Must fit in 64 bits.")
        else:
            params["seed"] = seed
    return params
