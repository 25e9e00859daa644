"""Where a gateway worker's event-loop thread spends its py-spy samples.

    python tests/bench/profile_summary.py before.txt [after.txt ...]   # one column per profile

Raw folded stacks (``py-spy record -f raw``). A sample counts for the first library below
found anywhere in its stack (so a socket write made by redis-py is Redis's), otherwise for
the leaf-most frame that matches one of the rest.
"""

from __future__ import annotations

import collections
import re
import sys

LIBRARIES = [
    ("Redis client (redis-py: pipeline, packing, socket, replies)", r"/redis/"),
    ("upstream HTTP client (aiohttp)", r"/aiohttp/"),
    ("logging (access line, redaction)", r"/logging/__init__|^redact \(|^RedactingFilter"),
    ("metrics (prometheus_client)", r"prometheus_client"),
    ("thread hand-offs (asgiref)", r"/asgiref/"),
]
PLACES = [
    (
        "Django handler, middleware, URL resolution",
        r"django/core/handlers|django/urls|django/utils/deprecation|django/dispatch",
    ),
    ("Django request/response objects", r"django/http/"),
    ("data plane (config/data_plane.py)", r"config/data_plane"),
    ("gateway + answer code", r"/(chat|inference|config|monitoring)/"),
    ("uvicorn + event loop", r"uvicorn/|asyncio/|selectors|httptools"),
]


def summarise(path: str) -> tuple[collections.Counter[str], int]:
    counts: collections.Counter[str] = collections.Counter()
    total = 0
    for line in open(path, encoding="utf-8"):
        stack, _, n = line.rstrip().rpartition(" ")
        frames = stack.split(";")
        if "gunicorn" not in frames[0]:
            continue  # the event-loop (main) thread only
        total += int(n)
        lib = next((name for name, pat in LIBRARIES if any(re.search(pat, f) for f in frames)), None)
        if lib is None:
            lib = next((name for f in reversed(frames) for name, pat in PLACES if re.search(pat, f)), "other")
        counts[lib] += int(n)
    return counts, total


def main(paths: list[str]) -> None:
    results = [summarise(p) for p in paths]
    for name in [n for n, _ in LIBRARIES + PLACES] + ["other"]:
        print(f"| {name} | " + " | ".join(f"{c[name] / max(t, 1) * 100:.0f} %" for c, t in results) + " |")
    print("loop-thread samples:", ", ".join(str(t) for _, t in results))


if __name__ == "__main__":
    main(sys.argv[1:])
