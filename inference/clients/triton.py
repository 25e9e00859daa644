"""Triton clients (tritonclient's asyncio APIs): embedding and reranker models.

One instance per endpoint and event loop; the protocol of the endpoint picks
``tritonclient.http.aio`` (a pooled aiohttp session) or ``tritonclient.grpc.aio``
(one HTTP/2 channel). Both expose the same small surface used by the router:
readiness, model metadata (dimension, max batch size) and batched inference.

Model contract (see docs/inference.md): ``embedding`` takes ``TEXT`` (BYTES, the
caller adds the e5 prefix) and returns ``EMBEDDING`` (FP32 [dim], L2-normalised);
``reranker`` takes ``QUERY`` and ``PASSAGE`` (BYTES) and returns ``SCORE`` (FP32 [1]).

Tracing: every inference call is a ``triton.infer`` span (model, endpoint, protocol, rows);
over HTTP the aiohttp client's span is its child.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from inference.config import TRITON_GRPC, EndpointConfig
from inference.errors import (
    InferenceError,
    UpstreamClientError,
    UpstreamConnectionError,
    UpstreamServerError,
    UpstreamTimeout,
)
from monitoring import tracing


@dataclass(frozen=True)
class TritonModelInfo:
    name: str
    inputs: dict[str, tuple[str, tuple[int, ...]]]  # name -> (datatype, shape)
    outputs: dict[str, tuple[str, tuple[int, ...]]]
    max_batch_size: int

    def output_width(self, name: str) -> int:
        """Last dimension of an output (the embedding dimension for EMBEDDING)."""
        shape = self.outputs[name][1]
        if not shape or shape[-1] <= 0:
            raise UpstreamServerError(f"model {self.name}: output {name} has no fixed width ({shape})")
        return shape[-1]


class TritonClient:
    def __init__(self, config: EndpointConfig) -> None:
        self.config = config
        self.name = config.name
        self.model = config.model_name
        self._grpc = config.protocol == TRITON_GRPC
        address = config.base_url.split("://", 1)[-1].rstrip("/")
        if self._grpc:
            import tritonclient.grpc.aio as grpcclient

            self._mod: Any = grpcclient
            self._client: Any = grpcclient.InferenceServerClient(url=address)
        else:
            import tritonclient.http.aio as httpclient

            self._mod = httpclient
            self._client = httpclient.InferenceServerClient(
                url=address,
                ssl=config.base_url.startswith("https://"),
                conn_limit=config.max_concurrent + 2,
                conn_timeout=config.total_timeout_s,
            )
        self._info: TritonModelInfo | None = None

    async def aclose(self) -> None:
        await self._client.close()

    # --- readiness / metadata ---------------------------------------------------

    async def server_ready(self, *, timeout: float) -> bool:
        return bool(await self._call(self._client.is_server_ready(), timeout))

    async def model_ready(self, *, timeout: float) -> bool:
        return bool(await self._call(self._client.is_model_ready(self.model), timeout))

    async def model_info(self, *, timeout: float | None = None) -> TritonModelInfo:
        """Inputs, outputs and max batch size from the server (fetched once, then cached)."""
        if self._info is None:
            timeout = timeout or self.config.connect_timeout_s + self.config.read_timeout_s
            if self._grpc:
                meta = await self._call(self._client.get_model_metadata(self.model, as_json=True), timeout)
                config = (await self._call(self._client.get_model_config(self.model, as_json=True), timeout)).get(
                    "config", {}
                )
            else:
                meta = await self._call(self._client.get_model_metadata(self.model), timeout)
                config = await self._call(self._client.get_model_config(self.model), timeout)
            self._info = TritonModelInfo(
                name=self.model,
                inputs=_tensors(meta.get("inputs", [])),
                outputs=_tensors(meta.get("outputs", [])),
                max_batch_size=int(config.get("max_batch_size") or 0),
            )
        return self._info

    # --- inference ----------------------------------------------------------------

    async def embed(self, texts: Sequence[str], *, deadline: float) -> np.ndarray:
        """(len(texts), dim) float32 vectors for texts that already carry their e5 prefix."""
        result = await self._infer({"TEXT": texts}, "EMBEDDING", deadline=deadline)
        return np.asarray(result, dtype=np.float32).reshape(len(texts), -1)

    async def rerank(self, pairs: Sequence[tuple[str, str]], *, deadline: float) -> np.ndarray:
        """(len(pairs),) float32 relevance scores."""
        result = await self._infer(
            {"QUERY": [q for q, _p in pairs], "PASSAGE": [p for _q, p in pairs]}, "SCORE", deadline=deadline
        )
        return np.asarray(result, dtype=np.float32).reshape(len(pairs))

    async def _infer(self, columns: dict[str, Sequence[str]], output: str, *, deadline: float) -> np.ndarray:
        inputs = []
        for name, values in columns.items():
            data = np.array([[v.encode("utf-8")] for v in values], dtype=np.object_)
            tensor = self._mod.InferInput(name, list(data.shape), "BYTES")
            tensor.set_data_from_numpy(data)
            inputs.append(tensor)
        outputs = [self._mod.InferRequestedOutput(output)]
        timeout = deadline - asyncio.get_running_loop().time()
        if timeout <= 0:
            raise UpstreamTimeout("no time left for the call", endpoint=self.name)
        rows = len(next(iter(columns.values()), ()))
        with tracing.span(
            "triton.infer",
            **{
                "triton.model": self.model,
                "triton.rows": rows,
                "inference.endpoint": self.name,
                "rpc.system": "grpc" if self._grpc else "http",
            },
        ):
            result = await self._call(self._client.infer(self.model, inputs, outputs=outputs), timeout)
        array = result.as_numpy(output)
        if array is None:
            raise UpstreamServerError(f"model {self.model} returned no {output}", endpoint=self.name)
        return array

    async def _call(self, awaitable: Any, timeout: float) -> Any:
        try:
            async with asyncio.timeout(timeout):
                return await awaitable
        except TimeoutError:
            raise UpstreamTimeout(f"Triton did not answer within {timeout:g}s", endpoint=self.name) from None
        except InferenceError:
            raise
        except Exception as exc:
            raise map_triton_error(exc, self.name) from exc


def _tensors(items: list[dict[str, Any]]) -> dict[str, tuple[str, tuple[int, ...]]]:
    return {t["name"]: (t.get("datatype", ""), tuple(int(d) for d in t.get("shape", []))) for t in items}


def map_triton_error(exc: BaseException, endpoint: str) -> InferenceError:
    """tritonclient / aiohttp / grpc failures as typed inference errors."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamConnectionError(f"cannot connect: {exc}", endpoint=endpoint)
    if isinstance(exc, aiohttp.ClientError | ConnectionError | OSError):
        return UpstreamServerError(f"connection lost: {type(exc).__name__}: {exc}", endpoint=endpoint)
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        message = f"Triton: {exc.message() or exc}"[:500]
        if "UNAVAILABLE" in status:
            return UpstreamConnectionError(message, endpoint=endpoint)
        if "DEADLINE_EXCEEDED" in status:
            return UpstreamTimeout(message, endpoint=endpoint)
        if status in ("400", "StatusCode.INVALID_ARGUMENT"):
            return UpstreamClientError(message, upstream_status=400, endpoint=endpoint)
        code = int(status) if status.isdigit() else None
        return UpstreamServerError(message, upstream_status=code, endpoint=endpoint)
    return UpstreamServerError(f"{type(exc).__name__}: {exc}"[:500], endpoint=endpoint)
