"""Garbage-collection probe for the platform's gunicorn workers (benchmarks only).

Put this folder first on ``PYTHONPATH`` and name a log path prefix; every Python process
started with that environment imports it at start-up, and in gunicorn processes it logs
each cycle collection that is a full one (gen2) or took more than
``VH_GCPROBE_MIN_MS`` (default 4) of CPU: generation, wall and CPU time, what it freed,
the thread it ran in, the running totals per generation, and how many objects are frozen.
One file per process, ``<prefix>.<pid>``::

    PYTHONPATH=tests/bench/gcprobe VH_GCPROBE=/tmp/gcp \\
      .venv/bin/python tests/bench/bench_websocket.py --clients 1000 --chunks 100 --delay-ms 500
    grep gen2 /tmp/gcp.*

This is how the 1,000-stream tail was traced to the collector (docs/chat.md, "Where the
tail came from"). Wall time well above CPU time means the collecting thread was
descheduled while it held the GIL.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from collections import Counter
from typing import Any

_PREFIX = os.environ.get("VH_GCPROBE")

if _PREFIX and any("gunicorn" in arg for arg in sys.argv):
    _MIN_MS = float(os.environ.get("VH_GCPROBE_MIN_MS", "4"))
    _started: dict[str, float] = {}
    _counts: Counter[str] = Counter()
    _cpu_ms: Counter[str] = Counter()

    def _probe(phase: str, info: dict[str, Any]) -> None:
        generation = info["generation"]
        if phase == "start":
            _started["wall"] = time.perf_counter()
            _started["cpu"] = time.thread_time()
            return
        wall_ms = (time.perf_counter() - _started.get("wall", time.perf_counter())) * 1000
        cpu_ms = (time.thread_time() - _started.get("cpu", time.thread_time())) * 1000
        _counts[f"gen{generation}"] += 1
        _cpu_ms[f"gen{generation}"] += cpu_ms
        if generation < 2 and cpu_ms < _MIN_MS:
            return
        with open(f"{_PREFIX}.{os.getpid()}", "a") as log:
            log.write(
                f"{time.monotonic():.3f} gen{generation} wall={wall_ms:.2f}ms cpu={cpu_ms:.2f}ms "
                f"collected={info['collected']} thread={threading.current_thread().name} "
                f"frozen={gc.get_freeze_count()} collections={dict(_counts)} "
                f"cpu_ms={ {k: round(v) for k, v in _cpu_ms.items()} }\n"
            )

    gc.callbacks.append(_probe)
