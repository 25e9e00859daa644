"""The official openai SDK against a live server (uvicorn subprocess), streaming and not."""

from __future__ import annotations

import openai
import pytest

from chat.gateway.services import apikey_create
from tests.chat.conftest import nonce

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("endpoints")]


@pytest.fixture
def api_key(alice) -> str:
    return apikey_create(name="sdk test", user=alice, scopes=["chat"]).full_key


@pytest.fixture
def client(live_asgi, api_key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live_asgi.url}/v1", api_key=api_key, timeout=120, max_retries=0)


def test_it_answers_through_the_sdk_without_streaming(chat_settings, endpoints, client):
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": f"Say hello. ({nonce()})"}],
        max_tokens=8,
        extra_body={"retrieval": False},
    )
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens > 0 and reply.usage.total_tokens > reply.usage.completion_tokens
    assert reply.model_extra["sources"] == []


def test_it_streams_through_the_sdk_with_sources_on_the_last_chunk(chat_settings, endpoints, client):
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"What is a vacant house subsidy? ({nonce()})"},
            ],
            max_tokens=10,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and isinstance(finals[0].model_extra["sources"], list)  # retrieval on by default
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_it_lists_models(client):
    models = client.models.list()
    assert [m.id for m in models.data]


def test_it_refuses_bad_keys_and_bad_requests_in_openai_shape(chat_settings, live_asgi, client):
    bad = openai.OpenAI(base_url=f"{live_asgi.url}/v1", api_key="vhk_aaaaaaaa_" + "x" * 43, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        bad.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert exc.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.UnprocessableEntityError) as exc:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], n=2)
    assert exc.value.body["param"] == "n" and exc.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], extra_body={"tools_x": 1}
        )


def test_it_stores_the_exchange_when_asked(chat_settings, endpoints, client, alice):
    from chat.models import Conversation

    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": f"Hi ({nonce()})"}],
        max_tokens=5,
        extra_body={"retrieval": False, "store": True},
    )
    conversation = Conversation.objects.get(pk=reply.model_extra["conversation_id"])
    assert conversation.user_id == alice.pk and conversation.channel == "openai"
    assert [m.role for m in conversation.messages.all()] == ["user", "assistant"]
    assert conversation.messages.last().content == reply.choices[0].message.content


def test_embeddings_are_the_vectors_the_search_pipeline_stored_and_searches_with(
    chat_settings, client, guide, settings
):
    """A chunk's text embedded through /v1/embeddings is the vector ingestion stored for it; a question
    embedded as a query is the vector retrieval searches with."""
    import numpy as np

    from inference.services import embed_query_sync
    from knowledge.models import Chunk

    chunk = Chunk.objects.filter(document=guide).order_by("ordinal").first()
    passage = client.embeddings.create(model=settings.INFERENCE_EMBEDDING_MODEL_NAME, input=[chunk.text])
    assert np.allclose(np.array(passage.data[0].embedding, dtype=np.float32), chunk.vector, atol=1e-5)
    question = "빈집 철거 지원금은 얼마인가요?"
    query = client.embeddings.create(
        model=settings.INFERENCE_EMBEDDING_MODEL_NAME, input=question, extra_body={"input_type": "query"}
    )
    assert np.allclose(np.array(query.data[0].embedding, dtype=np.float32), embed_query_sync(question), atol=1e-5)
    assert passage.usage.prompt_tokens > 0 and query.usage.prompt_tokens > 0
