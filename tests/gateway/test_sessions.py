"""Chat-session facts in Redis: session:{user}:{session}, refreshed on activity (30 min)."""

from __future__ import annotations

import pytest

from chat.gateway.services import get_session, session_key, touch_session
from config.redis import get_redis

pytestmark = pytest.mark.services


async def test_it_stores_and_refreshes_session_facts(any_redis, settings):
    assert await touch_session(user_id=42, session_id="abc", client={"ua": "Firefox", "channel": "web"})
    key = session_key(42, "abc")
    assert key == f"{settings.REDIS_KEY_PREFIX}:session:42:abc"
    facts = await get_session(user_id=42, session_id="abc")
    assert facts["client"] == '{"ua": "Firefox", "channel": "web"}' and float(facts["last_active"]) > 0
    assert "conversation_id" not in facts
    await get_redis().expire(key, 5)
    assert await touch_session(user_id=42, session_id="abc", conversation_id=7)
    assert 1790 < await get_redis().ttl(key) <= settings.CHAT_SESSION_TTL == 1800
    facts = await get_session(user_id=42, session_id="abc")
    assert facts["conversation_id"] == "7" and "client" in facts
    assert await touch_session(user_id=None, session_id="anon-1")
    assert await get_redis().exists(session_key(None, "anon-1"))
