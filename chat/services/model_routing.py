"""Which model group answers a request: the name asked for, the caller's access, and fallbacks.

Every channel goes through here (browser chat, REST, ``/v1/chat/completions``,
``/v1/embeddings``, ``/v1/models``), so access and resolution are decided in one place:

    choice = await model_choose(subject, requested)    # ModelNotFound: 404 model_not_found
    route = route_plan(choice, window_of=..., fits=...) # the candidates, fallbacks in order

Resolution is memory only (the registry's catalog of groups, the caller's allowed set
cached per process): a few dict lookups per request. Unknown, disabled and forbidden
names get the same 404, so a caller cannot learn which models others may use.

Fallbacks (``ModelGroup.fallbacks``, before the first token only) are taken when the
group cannot fit the prompt (context window), has no usable endpoint (breakers open or
failed health checks, decided here before anything is charged), is over its own limits
or budget (``admit_routed``), or fails before its first token (the answer pipeline).
A fallback the caller may not use is skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chat.errors import ModelNotFound, PlatformError
from chat.gateway import access
from chat.gateway import services as gateway
from chat.gateway.types import Admission, Subject
from inference import services as inference
from inference.config import EMBEDDING, GENERATION, GroupConfig, env_generation_group
from monitoring.metrics import MODEL_FALLBACKS, MODEL_NOT_FOUND, MODEL_REQUESTS, MODEL_TOKENS, MODEL_TTFT

# A name every deployment answers to, unless a group or alias takes it: the default chat model
# (what integrators' examples can use without knowing the deployment's model names).
DEFAULT_NAME = "default"


@dataclass(frozen=True, slots=True)
class ModelChoice:
    """The group a request asked for (resolved and allowed) and its allowed fallbacks."""

    asked: str  # the name the caller sent ("": none, the default)
    group: GroupConfig | None  # None: no model group is configured; every generation endpoint answers
    chain: tuple[GroupConfig, ...] = ()  # group, then the fallbacks the caller may use

    @property
    def name(self) -> str:
        """The name to answer with: the group's, or what was asked when groups are not configured."""
        return self.group.name if self.group is not None else self.asked


@dataclass(frozen=True, slots=True)
class Candidate:
    group: GroupConfig | None
    context_window: int
    reason: str = ""  # why a fallback is in front of the group asked for: "context", "unavailable"


async def allowed_for(subject: Subject) -> access.Allowed:
    """The model-group ids ``subject`` may use (None: all); anonymous callers are decided by the caller."""
    if subject.api_key_id is not None:
        return subject.key_models
    if subject.user_id is not None and not subject.is_anonymous:
        return await access.user_allowed(subject.user_id)
    return None


def _anonymous(subject: Subject) -> bool:
    return subject.api_key_id is None and (subject.user_id is None or subject.is_anonymous)


def _default_group(catalog: Any, preferred: str, allowed: access.Allowed) -> GroupConfig | None:
    """ChatSettings' default, else the environment's model, else the first generation group allowed."""
    for name in (preferred, env_generation_group()):
        group = catalog.get(name) if name else None
        if group is not None and group.kind == GENERATION and (allowed is None or group.id in allowed):
            return group
    return next((g for g in catalog.groups(GENERATION) if allowed is None or g.id in allowed), None)


def not_found(requested: str) -> ModelNotFound:
    MODEL_NOT_FOUND.inc()
    return ModelNotFound(
        f"The model `{requested[:100]}` does not exist or you do not have access to it.", fields={"model": []}
    )


async def model_choose(
    subject: Subject, requested: str | None, *, kind: str = GENERATION, default: str = ""
) -> ModelChoice:
    """The group ``requested`` names (an alias works too) if ``subject`` may use it, else ModelNotFound.

    No name, or ``"default"`` (unless a group is called so): ``default`` (ChatSettings' default
    model) for generation, the embedding model for embeddings. Anonymous callers (browser chat without login) may use only the
    default chat model.
    """
    asked = requested or ""
    catalog = await inference.model_catalog()
    if not catalog:
        return ModelChoice(asked, None)
    allowed = await allowed_for(subject)
    if kind == EMBEDDING:
        group = catalog.resolve(asked) if asked else catalog.embedding_group()
        if group is None or group.kind != EMBEDDING or (allowed is not None and group.id not in allowed):
            raise not_found(asked or "embedding")
        return ModelChoice(asked, group, (group,))
    if asked == DEFAULT_NAME and catalog.resolve(asked) is None:
        asked = ""  # "default": the default chat model, whatever it is called here
    anonymous = _anonymous(subject)
    # The default is worked out only when it matters (no name, or an anonymous caller).
    fallback_default = _default_group(catalog, default, allowed) if anonymous or not asked else None
    if anonymous:
        allowed = frozenset({fallback_default.id}) if fallback_default is not None else frozenset()
    group = catalog.resolve(asked) if asked else fallback_default
    if group is None or group.kind != GENERATION or (allowed is not None and group.id not in allowed):
        raise not_found(asked or "default")
    chain = tuple(g for g in catalog.chain(group) if allowed is None or g.id in allowed)
    return ModelChoice(asked, group, chain)


async def models_for(subject: Subject, *, kind: str | None = None, default: str = "") -> list[GroupConfig]:
    """The groups ``subject`` may use (``/v1/models``, the browser's model picker), by name."""
    catalog = await inference.model_catalog()
    if _anonymous(subject):
        group = _default_group(catalog, default, None)
        return [group] if group is not None and kind in (None, GENERATION) else []
    allowed = await allowed_for(subject)
    return [g for g in catalog.groups(kind) if allowed is None or g.id in allowed]


async def chat_model_picker(subject: Subject, *, default: str = "") -> tuple[list[str], str]:
    """(the chat models ``subject`` may choose from, the one chosen unless they pick another)."""
    names = [g.name for g in await models_for(subject, kind=GENERATION, default=default)]
    try:
        chosen = (await model_choose(subject, None, default=default)).name
    except ModelNotFound:
        chosen = ""
    return names, chosen


def route_plan(
    choice: ModelChoice, *, window_of: Callable[[GroupConfig | None], int], fits: Callable[[int], bool]
) -> list[Candidate]:
    """The groups to try, in order: those whose context window fits the prompt, usable ones first.

    An empty list: no group's window fits the prompt (the caller answers 400
    context_length_exceeded). Groups without a usable endpoint stay, last: when nothing is
    usable the first of them is asked anyway (a breaker may be about to let a probe through)
    and its error is the answer.
    """
    if choice.group is None:
        window = window_of(None)
        return [Candidate(None, window)] if fits(window) else []
    usable: list[tuple[GroupConfig, int]] = []
    down: list[tuple[GroupConfig, int]] = []
    asked_fits = False
    for group in choice.chain:
        window = window_of(group)
        if not fits(window):
            continue
        asked_fits = asked_fits or group is choice.group
        (usable if inference.model_group_usable(group) else down).append((group, window))
    return [
        Candidate(g, w, "" if g is choice.group else ("unavailable" if asked_fits else "context"))
        for g, w in usable + down
    ]


async def admit_routed(
    subject: Subject, candidates: list[Candidate], cache_key_of: Callable[[Candidate], str | None]
) -> tuple[int, Admission]:
    """``gateway.admit`` for the first candidate; a refusal by that model's own limits or budget
    moves to the next one (the refused attempt is undone, so nothing is counted twice).

    Returns (index of the admitted candidate, admission); a refusal that no fallback can
    avoid comes back with ``allowed=False``.
    """
    admission = Admission()
    for i, candidate in enumerate(candidates):
        admission = await gateway.admit(subject, cache_key=cache_key_of(candidate), model=candidate.group)
        if admission.allowed or not admission.model_scoped or i == len(candidates) - 1:
            return i, admission
    return len(candidates) - 1, admission


def count_fallback(asked: GroupConfig | None, served: GroupConfig | None, reason: str) -> None:
    if asked is not None and served is not None and served.name != asked.name:
        MODEL_FALLBACKS.labels(model=asked.name, fallback=served.name, reason=reason or "unavailable").inc()


@dataclass(frozen=True, slots=True)
class _ModelMetrics:
    ok: Any
    error: Any
    cached: Any
    prompt: Any
    completion: Any
    ttft: Any


_model_metrics: dict[str, _ModelMetrics] = {}


def model_metrics(model: str) -> _ModelMetrics:
    """The labelled children of one model group's metrics, looked up once (``labels()`` takes a lock)."""
    found = _model_metrics.get(model)
    if found is None:
        found = _model_metrics[model] = _ModelMetrics(
            MODEL_REQUESTS.labels(model, "ok"),
            MODEL_REQUESTS.labels(model, "error"),
            MODEL_REQUESTS.labels(model, "cached"),
            MODEL_TOKENS.labels(model, "prompt"),
            MODEL_TOKENS.labels(model, "completion"),
            MODEL_TTFT.labels(model),
        )
    return found


def count_model_answer(model: str, outcome: Any) -> None:
    """The per-model figures of one answer (``model``: a group name): requests, tokens, time to first token."""
    m = model_metrics(model)
    if outcome.cached:
        m.cached.inc()
        return
    (m.error if outcome.error else m.ok).inc()
    m.prompt.inc(outcome.prompt_tokens)
    m.completion.inc(outcome.completion_tokens)
    if outcome.ttft_ms is not None and outcome.endpoint:  # the model answered (not a quote, not a curated reply)
        m.ttft.observe(outcome.ttft_ms / 1000)


def falls_back(exc: PlatformError) -> bool:
    """An upstream failure another model may not share: the group's endpoints failed or are busy.

    Not the request's own fault (a 4xx, an invalid request), which any model would refuse too.
    """
    from inference.errors import InferenceError, NoHealthyEndpoint, QueueFull

    return isinstance(exc, InferenceError) and (exc.retryable or isinstance(exc, NoHealthyEndpoint | QueueFull))
