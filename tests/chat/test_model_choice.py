"""Browser chat and models: the picker shows the models a visitor may use; the websocket frame's
``model`` picks the group whose endpoint answers (two scripted upstreams over real sockets)."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async
from django.db import connections
from django.test import Client

from chat.gateway.access import forget_access
from chat.gateway.models import ModelAccess
from inference.config import GENERATION, OPENAI, EndpointConfig, GroupConfig
from inference.registry import Registry, set_registry
from tests.chat.conftest import nonce, session_cookie
from tests.chat.test_websocket import answer, connect
from tests.inference.scripted_upstream import Answer, ScriptedUpstream

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

ALPHA, BETA = GroupConfig("alpha", id=101), GroupConfig("beta", id=102)


@pytest.fixture
async def two_models(chat_settings):
    chat_settings.retrieval_enabled = False
    await database_sync_to_async(chat_settings.save)()
    ups = {}
    for name in ("alpha", "beta"):
        up = ups[name] = ScriptedUpstream(model=f"{name}-upstream")
        await up.start()
        up.default = Answer(tokens=[f"from {name}"])
    configs = [
        EndpointConfig(name=f"ep-{n}", kind=GENERATION, protocol=OPENAI, base_url=u.base_url, group=n)
        for n, u in ups.items()
    ]
    previous = set_registry(Registry.static(configs, [ALPHA, BETA]))
    forget_access()
    try:
        yield ups
    finally:
        set_registry(previous)
        forget_access()
        for up in ups.values():
            await up.stop()


def page(user=None) -> str:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client.get("/").content.decode()


async def test_the_picker_shows_the_models_a_visitor_may_use(two_models, alice, bob):
    @database_sync_to_async
    def pages() -> tuple[str, str, str]:
        try:
            ModelAccess.objects.create(user=bob, allowed_models=[BETA.id])
            return page(alice), page(bob), page()
        finally:
            connections.close_all()

    for_alice, for_bob, for_anonymous = await pages()
    assert 'id="model-select"' in for_alice
    assert '<option value="alpha" selected>alpha</option>' in for_alice and '<option value="beta">' in for_alice
    assert 'id="model-select"' not in for_bob  # one model: nothing to choose
    assert 'id="model-select"' not in for_anonymous  # anonymous visitors get the default model


async def test_the_message_frame_picks_the_model(two_models, alice):
    ws = await connect(await database_sync_to_async(session_cookie)(alice))
    frames = await answer(ws, content=f"hi ({nonce()})", model="beta")
    assert frames[-1]["type"] == "end" and frames[-1]["model"] == "beta", frames
    assert "".join(f["text"] for f in frames if f["type"] == "token") == "from beta"
    frames = await answer(ws, content=f"hi ({nonce()})")
    assert frames[-1]["model"] == "alpha"  # no model: the default
    frames = await answer(ws, content="hi", model="no-such-model")
    assert frames == [frames[0]] and frames[0]["type"] == "error" and frames[0]["code"] == "model_not_found"
    assert [r.body["model"] for r in two_models["beta"].chat_requests] == ["beta-upstream"]
    assert len(two_models["alpha"].chat_requests) == 1
    await ws.disconnect()
