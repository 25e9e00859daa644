"""Endpoint and model-group configuration as plain values: what the request path works with.

``EndpointConfig`` is an immutable copy of a ``ModelEndpoint`` row (or of an
endpoint derived from the environment), ``GroupConfig`` of a ``ModelGroup`` row, so
the token loop never touches the ORM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

GENERATION = "generation"
EMBEDDING = "embedding"
RERANKER = "reranker"

OPENAI = "openai"
TRITON_HTTP = "triton_http"
TRITON_GRPC = "triton_grpc"


@dataclass(frozen=True)
class EndpointConfig:
    name: str
    kind: str
    protocol: str
    base_url: str
    model_name: str = ""
    weight: int = 100
    priority: int = 0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    total_timeout_s: float = 300.0
    max_concurrent: int = 16
    max_queue: int = 64
    api_key: str = field(default="", repr=False)
    default_params: dict[str, Any] = field(default_factory=dict, compare=True, hash=False)
    context_window: int | None = None
    id: int | None = None
    # The model group (its public name) this endpoint serves; "" for none (embedding, reranker).
    group: str = ""

    @classmethod
    def from_model(cls, row: Any, *, group: str = "") -> EndpointConfig:
        return cls(
            id=row.pk,
            name=row.name,
            kind=row.kind,
            protocol=row.protocol,
            base_url=row.base_url,
            model_name=row.model_name,
            weight=max(1, row.weight),
            priority=row.priority,
            connect_timeout_s=row.connect_timeout_s,
            read_timeout_s=row.read_timeout_s,
            total_timeout_s=row.total_timeout_s,
            max_concurrent=max(1, row.max_concurrent),
            max_queue=row.max_queue,
            api_key=row.api_key,
            default_params=dict(row.default_params or {}),
            context_window=row.context_window,
            group=group,
        )


@dataclass(frozen=True)
class GroupConfig:
    """A model group: the name clients ask for, its aliases, and the groups it falls back to."""

    name: str
    kind: str = GENERATION
    aliases: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    context_window: int | None = None
    id: int | None = None

    @classmethod
    def from_model(cls, row: Any) -> GroupConfig:
        return cls(
            id=row.pk,
            name=row.name,
            kind=row.kind,
            aliases=tuple(row.alias_list),
            fallbacks=tuple(row.fallback_list),
            context_window=row.context_window,
        )


@dataclass(frozen=True)
class EnvEndpointSpec:
    """An endpoint the environment asks for; ``sync_endpoints`` writes it to the database."""

    name: str
    kind: str
    protocol: str
    base_url: str
    model_name: str
    api_key: str = field(default="", repr=False)
    group: str = ""  # the env model group this endpoint serves (generation)

    def as_config(self) -> EndpointConfig:
        return EndpointConfig(
            name=self.name,
            kind=self.kind,
            protocol=self.protocol,
            base_url=self.base_url,
            model_name=self.model_name,
            api_key=self.api_key,
            group=self.group,
        )


# Fixed names of the endpoints managed from the environment.
ENV_VLLM = "vllm"
ENV_LOCAL_LLM = "local-llm"
ENV_TRITON_EMBEDDING = "triton-embedding"
ENV_TRITON_RERANKER = "triton-reranker"
ENV_NAMES = (ENV_VLLM, ENV_LOCAL_LLM, ENV_TRITON_EMBEDDING, ENV_TRITON_RERANKER)


def env_generation_group() -> str:
    """The name of the model group the environment's generation endpoint serves.

    VLLM_URL set: VLLM_MODEL (vLLM's served model name; "default" when unset, the endpoint
    then asks the server for its model); unset: LOCAL_LLM_MODEL, the local llama.cpp model.
    """
    if settings.VLLM_URL:
        return settings.VLLM_MODEL or "default"
    return settings.LOCAL_LLM_MODEL


def env_group_specs() -> list[GroupConfig]:
    """The model groups the environment implies: its generation model and the embedding model."""
    return [
        GroupConfig(name=env_generation_group(), kind=GENERATION),
        GroupConfig(name=settings.INFERENCE_EMBEDDING_MODEL_NAME, kind=EMBEDDING),
    ]


def env_endpoint_specs() -> list[EnvEndpointSpec]:
    """The endpoints implied by VLLM_URL / LOCAL_LLM_URL / TRITON_URL (see docs/inference.md).

    VLLM_URL set: a ``vllm`` generation endpoint; unset: ``local-llm`` at LOCAL_LLM_URL (the
    llama.cpp server of the local run). TRITON_URL set: ``triton-embedding`` and, unless
    TRITON_RERANKER_MODEL is empty, ``triton-reranker`` (gRPC when TRITON_PROTOCOL=grpc).
    """
    specs: list[EnvEndpointSpec] = []
    group = env_generation_group()
    if settings.VLLM_URL:
        specs.append(
            EnvEndpointSpec(
                ENV_VLLM,
                GENERATION,
                OPENAI,
                settings.VLLM_URL,
                settings.VLLM_MODEL or "",
                settings.VLLM_API_KEY or "",
                group=group,
            )
        )
    else:
        specs.append(EnvEndpointSpec(ENV_LOCAL_LLM, GENERATION, OPENAI, settings.LOCAL_LLM_URL, "", group=group))
    if settings.TRITON_URL:
        grpc = settings.TRITON_PROTOCOL == "grpc"
        if grpc and not settings.TRITON_GRPC_URL:
            from django.core.exceptions import ImproperlyConfigured

            raise ImproperlyConfigured("TRITON_PROTOCOL=grpc needs TRITON_GRPC_URL (host:port).")
        protocol = TRITON_GRPC if grpc else TRITON_HTTP
        url = settings.TRITON_GRPC_URL if grpc else settings.TRITON_URL
        specs.append(EnvEndpointSpec(ENV_TRITON_EMBEDDING, EMBEDDING, protocol, url, settings.TRITON_EMBEDDING_MODEL))
        if settings.TRITON_RERANKER_MODEL:
            specs.append(EnvEndpointSpec(ENV_TRITON_RERANKER, RERANKER, protocol, url, settings.TRITON_RERANKER_MODEL))
    return specs
