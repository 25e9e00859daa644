"""CPU per request of the model gateway's own steps, A/B in one process against a real Redis.

Each op is what the gateway does for one chat request around the model call:

- ``before``: ``admit`` + ``settle`` with the API key's rate-limit policy (requests, tokens,
  concurrency): the path before model groups existed;
- ``model``: the same plus resolving ``model`` (name/alias -> group, access, fallback chain,
  ``route_plan``) and the usage counters in ``settle``;
- ``model+budgets``: the same plus two monthly budgets (the key's and the model's): read in
  ``admit``'s round trip, charged in ``settle``'s.

``model+budgets`` minus ``before`` is what this change adds per request (the issue's bound:
0.3 ms of CPU). The modes alternate within each round; the figures are medians over rounds of
``process_time`` per op at concurrency 1 (no queueing in the figure), plus wall time per op.

Run:  set -a; . .local/services.env; set +a
      DEBUG=1 .venv/bin/python tests/bench/bench_model_gateway.py [--ops 3000] [--rounds 5]
Figures go to docs/performance.md ("Model gateway").
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DEBUG", "1")

import django

django.setup()

from django.conf import settings  # noqa: E402

from chat.gateway import budgets, limiter  # noqa: E402
from chat.gateway.services import Subject, admit, keys_purge_prefix, settle  # noqa: E402
from chat.services.model_routing import model_choose, route_plan  # noqa: E402
from inference.config import GENERATION, OPENAI, EndpointConfig, GroupConfig  # noqa: E402
from inference.registry import Registry, set_registry  # noqa: E402

BIG = 10**12
GROUP = GroupConfig("fake-model", id=1, aliases=("bench-model",), fallbacks=("other",))
OTHER = GroupConfig("other", id=2)


def _install_tables(with_budgets: bool) -> None:
    # What limiter.policies() / budgets.budget_table() would load: the bench's per-key policy
    # (every limit on, out of reach) and, when asked, a budget for the key and one for the model.
    policy = limiter.Policy(1, "bench", "api_key", BIG, 60, tokens_per_minute=BIG, concurrent=100_000)
    limiter._tables.set(limiter._KEY, limiter.PolicyTable(by_id={1: policy}), ttl=10**9)
    table = budgets.BudgetTable()
    if with_budgets:
        table.keys[(7, None)] = budgets.Budget(1, "api_key", BIG)
        table.defaults[("api_key", GROUP.id)] = budgets.Budget(2, "api_key", BIG, GROUP.id)
    budgets._tables.set(budgets._KEY, table, ttl=10**9)


async def _op(mode: str, subject: Subject) -> None:
    if mode == "before":
        admission = await admit(subject, cache_key=None)
        await settle(subject, admission, prompt_tokens=12, completion_tokens=20)
        return
    choice = await model_choose(subject, "bench-model")
    candidates = route_plan(choice, window_of=lambda g: 4096, fits=lambda w: True)
    admission = await admit(subject, cache_key=None, model=candidates[0].group)
    admission.usage.latency_ms = 15
    await settle(subject, admission, prompt_tokens=12, completion_tokens=20)


async def _measure(mode: str, ops: int) -> tuple[float, float]:
    _install_tables(with_budgets=mode == "model+budgets")
    subject = Subject(user_id=3, api_key_id=7, api_key_policy_id=1)
    for _ in range(min(ops, 200)):  # warm-up
        await _op(mode, subject)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(ops):
        await _op(mode, subject)
    return (time.process_time() - cpu) / ops * 1e6, (time.perf_counter() - wall) / ops * 1e6


async def main(ops: int, rounds: int) -> None:
    settings.REDIS_URL = os.environ["REDIS_URL"]
    settings.REDIS_CLUSTER = False
    settings.REDIS_KEY_PREFIX = f"vhbench{uuid.uuid4().hex[:6]}"
    settings.GATEWAY_USAGE_FLUSH_S = 0  # the counters stay in Redis (purged at the end)
    endpoints = [
        EndpointConfig(name="up", kind=GENERATION, protocol=OPENAI, base_url="http://127.0.0.1:9/v1", group=g.name)
        for g in (GROUP, OTHER)
    ]
    set_registry(Registry.static(endpoints, [GROUP, OTHER]))
    modes = ("before", "model", "model+budgets")
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    wall: dict[str, list[float]] = {m: [] for m in modes}
    try:
        for r in range(rounds):
            for mode in modes if r % 2 == 0 else reversed(modes):  # ABC CBA ...: drift hits all alike
                c, w = await _measure(mode, ops)
                cpu[mode].append(c)
                wall[mode].append(w)
                print(f"round {r + 1} {mode:14} cpu={c:6.0f} us/op wall={w:6.0f} us/op", flush=True)
    finally:
        await asyncio.to_thread(lambda: [keys_purge_prefix(prefix=f) for f in ("ratelimit", "usage", "budget")])
    base = statistics.median(cpu["before"])
    print(f"\n| mode | CPU µs/op (median of {rounds}) | wall µs/op | added CPU µs/op vs before |")
    print("| --- | ---: | ---: | ---: |")
    for mode in modes:
        m = statistics.median(cpu[mode])
        print(f"| {mode} | {m:.0f} | {statistics.median(wall[mode]):.0f} | {m - base:+.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ops", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.ops, args.rounds))
