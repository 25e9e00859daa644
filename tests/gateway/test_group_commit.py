"""The request path's group commit (chat/gateway/redis_async.py) on a real Redis and a real Redis Cluster.

Calls that arrive while a pipeline is out leave together in the next one; each caller gets
its own replies or its own error, a script flushed from Redis is sent again inside a shared
pipeline, and a caller that gave up is left out.
"""

from __future__ import annotations

import asyncio

import pytest
from redis.connection import Connection
from redis.exceptions import DataError, ResponseError

from chat.gateway.redis_async import pack, redis_scripts
from chat.gateway.scripts import RENEW_SHA
from config.redis import get_redis, key, sync_redis
from monitoring.metrics import REDIS_PIPELINE_CALLS
from tests.faults.proxy import FaultProxy

pytestmark = [pytest.mark.services]


def _sent() -> tuple[float, float]:
    """(pipelines, calls) sent so far, from the ``gateway_redis_pipeline_calls`` histogram."""
    (metric,) = REDIS_PIPELINE_CALLS.collect()
    values = {s.name: s.value for s in metric.samples if not s.labels}
    return values["gateway_redis_pipeline_calls_count"], values["gateway_redis_pipeline_calls_sum"]


async def test_calls_that_come_together_share_a_pipeline_and_each_gets_its_own_replies(any_redis):
    keys = [key("gc", f"{{n{i}}}") for i in range(60)]  # 60 hash slots: every node of a cluster
    before = _sent()
    replies = await asyncio.gather(
        *(redis_scripts([], [("SET", k, i), ("INCRBY", k, 1), ("GET", k)]) for i, k in enumerate(keys))
    )
    pipelines, calls = (now - then for now, then in zip(_sent(), before, strict=True))
    assert replies == [[True, i + 1, str(i + 1).encode()] for i in range(60)]
    # The first went alone at once; the other 59 waited for it and left in one pipeline.
    assert calls >= 60 and pipelines <= 3  # (a background renewal may send one of its own)


async def test_one_callers_failed_command_fails_that_caller_only(any_redis):
    wrong, good = key("gc", "{hash}"), key("gc", "{good}")
    await get_redis().hset(wrong, "field", 1)
    first, bad, after = await asyncio.gather(
        redis_scripts([], [("SET", good, 1)]),
        redis_scripts([], [("INCR", wrong)]),  # WRONGTYPE, in the same pipeline as the next call
        redis_scripts([], [("GET", good)]),
        return_exceptions=True,
    )
    assert first == [True]
    assert isinstance(bad, ResponseError) and "WRONGTYPE" in str(bad)
    assert after == [b"1"]


async def test_scripts_flushed_from_redis_are_sent_again_inside_a_shared_pipeline(any_redis):
    zsets = [key("gc", f"{{z{i}}}") for i in range(10)]
    for z in zsets:
        await get_redis().zadd(z, {"member": 1})
    await get_redis().script_flush()  # as after a restart or a failover: EVALSHA gets NOSCRIPT
    replies = await asyncio.gather(*(redis_scripts([(RENEW_SHA, [z], ["member", 60_000])]) for z in zsets))
    assert replies == [[1]] * 10  # each renewed its own slot, through EVAL
    # Cached again: EVALSHA answers (a longer lease, so the score changes even within the same millisecond).
    assert await redis_scripts([(RENEW_SHA, [zsets[0]], ["member", 120_000])]) == [1]


async def test_a_caller_that_gave_up_waiting_is_left_out_of_the_pipeline(single_redis):
    first, quitter, patient = key("gc", "first"), key("gc", "quitter"), key("gc", "patient")
    await get_redis().execute_command("CLIENT", "PAUSE", 300, "WRITE")  # the pipeline in flight stalls
    leader = asyncio.ensure_future(redis_scripts([], [("SET", first, 1)]))
    await asyncio.sleep(0.01)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(redis_scripts([], [("SET", quitter, 1)]), 0.05)
    assert await redis_scripts([], [("SET", patient, 1)]) == [True]  # waited for the leader, then went
    assert await leader == [True]
    assert await get_redis().mget(first, quitter, patient) == [b"1", None, b"1"]


def test_commands_are_encoded_as_redis_py_encodes_them():
    commands = [
        ("EVALSHA", "a" * 40, 2, "vh:{u:1}:a", b"vh:{u:1}:\xffb", -7, 0.25, ""),
        ("HINCRBY", "빈집:통계", "lookups", 1),
        ("MGET", *[f"k{i}" for i in range(20)]),
    ]
    assert pack(commands) == b"".join(b"".join(Connection().pack_command(*c)) for c in commands)
    with pytest.raises(DataError):
        pack([("SET", "k", True)])


async def test_a_connection_that_dies_under_the_written_pipeline_is_retried_once_on_a_new_one(single_redis, settings):
    # The pool's check at checkout passes (the connection looks idle and alive); the write is
    # answered with a reset. Only _exchange's retry makes this call succeed.
    from urllib.parse import urlsplit

    target = urlsplit(settings.REDIS_URL)
    proxy = FaultProxy(target.hostname or "127.0.0.1", target.port or 6379, name="redis")
    try:
        settings.REDIS_URL = f"redis://127.0.0.1:{proxy.port}{target.path or '/0'}"
        k = key("gc", "dropped")
        assert await redis_scripts([], [("SET", k, "before")]) == [True]  # a pooled connection, through the proxy
        proxy.drop_next_requests()
        assert await redis_scripts([], [("GET", k)]) == [b"before"]
        assert proxy.dropped == 1
    finally:
        await get_redis().aclose()
        proxy.close()


def test_the_loops_renewer_renews_every_held_lease_in_one_pipeline_per_tick(single_redis, settings):
    # A loop of its own, as a server process has: the suite's shared loop may hold other tests' leases.
    from chat.gateway.services.slot_lease import _renewers, lease

    settings.RATELIMIT_SLOT_TTL_S = 0.9  # a tick every 0.3 s
    keys = [key("gc", f"lease{i}") for i in range(20)]

    async def run() -> tuple[float, list, asyncio.Task | None]:
        r = get_redis()
        try:
            for i, k in enumerate(keys):
                await r.zadd(k, {f"m{i}": 1})
            before = _sent()
            held = [lease([k], f"m{i}") for i, k in enumerate(keys)]
            await asyncio.sleep(0.75)  # two ticks
            pipelines, _ = (now - then for now, then in zip(_sent(), before, strict=True))
            scores = [await r.zscore(k, f"m{i}") for i, k in enumerate(keys)]
            for one in held:
                one.release()
            await asyncio.sleep(0.35)
            return pipelines, scores, _renewers.get().task
        finally:
            await r.aclose()

    pipelines, scores, task = asyncio.run(run())
    assert all(score > 1 for score in scores), scores  # each renewed: its expiry moved to now + TTL
    assert 1 <= pipelines <= 2  # 20 leases, one pipeline per tick
    assert task is None  # nothing held: the task ended


async def test_connections_killed_under_the_pool_are_replaced_without_an_error(single_redis):
    k = key("gc", "killed")
    await asyncio.gather(*(redis_scripts([], [("SET", k, i)]) for i in range(8)))  # a few pooled connections
    # This pool's connections only (other clients of the shared Redis are left alone).
    pool = get_redis().connection_pool
    ours = {c._writer.get_extra_info("sockname")[1] for c in pool._available_connections}
    with sync_redis() as admin:
        addrs = [c["addr"] for c in admin.client_list() if int(c["addr"].rsplit(":", 1)[1]) in ours]
        for addr in addrs:
            admin.client_kill(addr)  # dead, as a Redis restart leaves them
    assert addrs
    assert await asyncio.gather(*(redis_scripts([], [("GET", k)]) for _ in range(8))) == [[b"7"]] * 8
