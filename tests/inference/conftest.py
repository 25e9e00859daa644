"""Fixtures of the inference tests: scripted upstreams, static registries, real-service guards."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest

from inference.config import GENERATION, OPENAI, EndpointConfig
from inference.registry import Registry
from tests.inference.scripted_upstream import ScriptedUpstream


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[[], ScriptedUpstream]]:
    """Factory of started scripted upstreams (stopped after the test): ``up = await upstreams()``."""
    started: list[ScriptedUpstream] = []

    async def make(**kwargs) -> ScriptedUpstream:
        upstream = ScriptedUpstream(**kwargs)
        await upstream.start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        await upstream.stop()


def generation_config(name: str, base_url: str, **overrides) -> EndpointConfig:
    """A generation endpoint with test-sized timeouts (overridable)."""
    values = dict(
        name=name,
        kind=GENERATION,
        protocol=OPENAI,
        base_url=base_url,
        model_name="",
        connect_timeout_s=1.0,
        read_timeout_s=2.0,
        total_timeout_s=5.0,
        max_concurrent=4,
        max_queue=8,
    )
    values.update(overrides)
    return EndpointConfig(**values)


@pytest.fixture
async def static_registry() -> AsyncIterator[Callable[..., Registry]]:
    """Factory of registries over fixed endpoint configs; their clients are closed after the test."""
    made: list[Registry] = []

    def make(*configs: EndpointConfig) -> Registry:
        registry = Registry.static(configs)
        made.append(registry)
        return registry

    yield make
    for registry in made:
        await registry.aclose()


@pytest.fixture
def fast_breaker(settings):
    """Breakers that open after 2 failures and probe again after 0.3 s; quick retries."""
    settings.INFERENCE_BREAKER_FAILURES = 2
    settings.INFERENCE_BREAKER_COOLDOWN_S = 0.3
    settings.INFERENCE_RETRY_BACKOFF_S = 0.01
    settings.INFERENCE_RETRY_BACKOFF_MAX_S = 0.02
    return settings


def require_env(*names: str) -> None:
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        pytest.skip(f"needs the real services ({', '.join(missing)} unset: source .local/services.env)")


@pytest.fixture
async def db_registry(transactional_db):
    """The production registry (database-backed, env endpoints synced on first use) as the process-wide one.

    Committed data (transactional_db): the registry reads the database from a worker thread.
    """
    from inference.embeddings import set_embedding_backend
    from inference.registry import set_registry

    registry = Registry()
    previous = set_registry(registry)
    previous_backend = set_embedding_backend(None)  # a fresh backend, bound to this registry
    yield registry
    await registry.aclose()
    set_registry(previous)
    set_embedding_backend(previous_backend)
