"""Readiness probes for deploy/local/{up,status} (stdlib only).

Runs with the host python 3.11, before any venv exists, so it must not import
anything outside the standard library. Exit status 0 = ready, 1 = not ready
(the reason goes to stderr).

    python probe.py es http://127.0.0.1:9200
    python probe.py triton http://127.0.0.1:8010
    python probe.py llm http://127.0.0.1:8081 [--chat]
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request

TRITON_MODELS = ("embedding", "reranker")


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _post_json(url: str, body: dict, timeout: float) -> tuple[int, bytes]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def probe_es(base: str, timeout: float) -> None:
    status, body = _get(f"{base}/_cluster/health?wait_for_status=yellow&timeout=2s", timeout)
    if status != 200:
        raise RuntimeError(f"cluster health HTTP {status}: {body[:200]!r}")
    health = json.loads(body)
    if health.get("status") not in ("yellow", "green"):
        raise RuntimeError(f"cluster status {health.get('status')}")


def probe_triton(base: str, timeout: float) -> None:
    status, _ = _get(f"{base}/v2/health/ready", timeout)
    if status != 200:
        raise RuntimeError(f"/v2/health/ready HTTP {status}")
    for model in TRITON_MODELS:
        status, _ = _get(f"{base}/v2/models/{model}/ready", timeout)
        if status != 200:
            raise RuntimeError(f"model {model} not ready (HTTP {status})")


def probe_llm(base: str, timeout: float, chat: bool) -> None:
    status, body = _get(f"{base}/v1/models", timeout)
    if status != 200:
        raise RuntimeError(f"/v1/models HTTP {status}")
    ids = [m.get("id") for m in json.loads(body).get("data", [])]
    if "smollm2" not in ids:
        raise RuntimeError(f"model smollm2 not listed: {ids}")
    if not chat:
        return
    # One tiny completion proves the model is loaded and a slot decodes.
    status, body = _post_json(
        f"{base}/v1/chat/completions",
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_tokens": 2,
            "temperature": 0,
        },
        max(timeout, 30.0),
    )
    if status != 200:
        raise RuntimeError(f"chat completion HTTP {status}: {body[:200]!r}")
    if not json.loads(body).get("choices"):
        raise RuntimeError("chat completion returned no choices")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=("es", "triton", "llm"))
    parser.add_argument("base_url")
    parser.add_argument("--chat", action="store_true", help="llm: also run a completion")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    base = args.base_url.rstrip("/")
    try:
        if args.kind == "es":
            probe_es(base, args.timeout)
        elif args.kind == "triton":
            probe_triton(base, args.timeout)
        else:
            probe_llm(base, args.timeout, args.chat)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"{args.kind} not ready: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
