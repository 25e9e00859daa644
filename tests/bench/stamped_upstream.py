#!/usr/bin/env python
"""A paced OpenAI-compatible streaming upstream whose tokens carry their send time.

For ``bench_websocket.py``: every content token is ``"<hex microseconds> "``, the
``time.monotonic()`` (CLOCK_MONOTONIC, shared by every process on the machine) at which
this server wrote it. A client that receives the token through the platform subtracts
it from its own clock: that is exactly the delay the platform (plus two loopback hops)
added to that token, with no drift from the upstream's own pacing mixed in.

    POST /v1/chat/completions  (stream: true)  role chunk, then --chunks tokens --delay-ms apart
                                                (scheduled on an absolute clock), finish, usage, [DONE]
    POST /v1/chat/completions  (stream: false) one JSON answer
    --receive-stamp: the first content token is ``"r<hex receive time> <hex write time> "``, where
                     the receive time is when this server got the request (before reading its body):
                     the upstream's own time to first token is the difference, which a client can
                     subtract from the TTFT it measured through the platform (bench_answer_path.py)
    GET  /v1/models, GET /health

Raw ASGI on uvicorn (uvloop + httptools), like ../shared/bench/fake_upstream.py: the
upstream must never be what a benchmark measures.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import orjson

HEAD = b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"fake-model","choices":[{"index":0,"delta":{"content":"'
TAIL = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
ROLE = HEAD.replace(b'"content":"', b'"role":"assistant","content":"') + TAIL
FINISH = b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"fake-model","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]}\n\n'
DONE = b"data: [DONE]\n\n"
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
JSON_HEADERS = [(b"content-type", b"application/json")]


def stamp() -> bytes:
    return b"%x " % int(time.monotonic() * 1_000_000)


def build_app(chunks: int, delay_s: float, *, receive_stamp: bool = False):
    usage = orjson.dumps({"prompt_tokens": 12, "completion_tokens": chunks, "total_tokens": 12 + chunks})
    usage_event = (
        b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":0,"model":"fake-model",'
        b'"choices":[],"usage":' + usage + b"}\n\n"
    )
    models = orjson.dumps({"object": "list", "data": [{"id": "fake-model", "object": "model", "owned_by": "bench"}]})

    async def read_body(receive) -> bytes:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                return body

    async def respond(send, status: int, body: bytes) -> None:
        await send({"type": "http.response.start", "status": status, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": body})

    async def chat(receive, send) -> None:
        received = b"r%x " % int(time.monotonic() * 1_000_000)
        request = orjson.loads(await read_body(receive))
        if not request.get("stream"):
            content = " ".join(stamp().decode().strip() for _ in range(chunks))
            answer = {
                "id": "chatcmpl-bench",
                "object": "chat.completion",
                "created": 0,
                "model": "fake-model",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": orjson.loads(usage),
            }
            await respond(send, 200, orjson.dumps(answer))
            return
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await send({"type": "http.response.body", "body": ROLE, "more_body": True})
        loop = asyncio.get_running_loop()
        start = loop.time()
        for i in range(1, chunks + 1):
            # An absolute schedule: a late wake-up does not push every later token back.
            await asyncio.sleep(max(0.0, start + i * delay_s - loop.time()))
            text = received + stamp() if receive_stamp and i == 1 else stamp()
            await send({"type": "http.response.body", "body": HEAD + text + TAIL, "more_body": True})
        await send({"type": "http.response.body", "body": FINISH + usage_event + DONE, "more_body": False})

    async def app(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if scope["method"] == "POST" and path.endswith("/chat/completions"):
            await chat(receive, send)
        elif path.endswith("/models"):
            await respond(send, 200, models)
        elif path == "/health":
            await respond(send, 200, b'"ok"')
        else:
            await respond(send, 404, b'{"error":{"message":"not found"}}')

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--chunks", type=int, default=40)
    ap.add_argument("--delay-ms", type=float, default=50.0)
    ap.add_argument("--receive-stamp", action="store_true", help="first token also carries the request's receive time")
    args = ap.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("loopback only")
    import uvicorn

    uvicorn.run(
        build_app(args.chunks, args.delay_ms / 1000, receive_stamp=args.receive_stamp),
        host=args.host,
        port=args.port,
        backlog=4096,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=120,
    )


if __name__ == "__main__":
    main()
