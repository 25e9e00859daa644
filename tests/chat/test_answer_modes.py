"""Answers made without the model: extractive quotes, the not-found reply, curated replies, the fallback.

Over a live server and the real services (Triton embeddings, Elasticsearch); the LLM is
asked only where the test says so.
"""

from __future__ import annotations

import openai
import pytest

from chat.gateway.services import apikey_create
from chat.models import CuratedReply
from chat.services.curated_replies import curated_reply_save
from tests.chat.conftest import nonce

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("endpoints")]


@pytest.fixture
def client(live_asgi, alice) -> openai.OpenAI:
    key = apikey_create(name="answer modes", user=alice, scopes=["chat"]).full_key
    return openai.OpenAI(base_url=f"{live_asgi.url}/v1", api_key=key, timeout=120, max_retries=0)


def ask(client: openai.OpenAI, question: str, mode: str, **extra) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": question}],
        max_tokens=30,
        extra_body={"answer_mode": mode, **extra},
    )


def test_an_extractive_answer_quotes_the_source_sentence_with_its_citation(chat_settings, guide, client):
    reply = ask(client, f"빈집 철거비는 가구당 최대 얼마까지 지원받을 수 있나요? ({nonce()})", "extractive")
    text = reply.choices[0].message.content
    assert "1,500만 원" in text and "[1]" in text, text
    assert reply.model_extra["sources"][0]["document_id"] == guide.pk
    assert reply.model_extra["sources"][0]["cited"] is True


def test_a_question_the_documents_do_not_answer_gets_the_not_found_reply(chat_settings, guide, client):
    chat_settings.not_found_message = "자료에서 찾지 못했습니다. 구청 빈집 담당 부서로 문의하세요."
    chat_settings.save()
    for mode in ("extractive", "generative"):
        reply = ask(client, f"오늘 서울 날씨는 어때요? ({nonce()})", mode)
        assert reply.choices[0].message.content == chat_settings.not_found_message, mode


def test_a_curated_reply_is_given_verbatim_and_cited_without_the_model(chat_settings, guide, client):
    reply_row = curated_reply_save(
        reply=CuratedReply(
            question="빈집 철거 보조금은 얼마까지 받을 수 있나요?",
            answer="빈집 한 동당 최대 1,500만 원입니다.",
            source=guide,
        )
    )
    assert reply_row.embedding
    answer = ask(client, "빈집 철거 보조금은 얼마까지 받을 수 있나요?", "generative")
    again = ask(client, "빈집 철거 보조금은 얼마까지 받을 수 있나요?", "generative")  # never from the response cache
    assert again.choices[0].message.content == answer.choices[0].message.content
    assert answer.choices[0].message.content == "빈집 한 동당 최대 1,500만 원입니다. [1]"
    assert answer.model_extra["sources"] == [
        {
            "n": 1,
            "title": guide.display_title,
            "snippet": "",
            "url": answer.model_extra["sources"][0]["url"],
            "document_id": guide.pk,
            "chunk_id": None,
            "score": answer.model_extra["sources"][0]["score"],
            "cited": True,
        }
    ]
    assert answer.model_extra["sources"][0]["score"] >= chat_settings.curated_threshold


def test_a_bad_answer_mode_is_a_clear_400(chat_settings, client):
    with pytest.raises(openai.BadRequestError) as info:
        ask(client, "빈집", "poetry")
    assert "answer_mode" in str(info.value)


async def test_generative_fallback_quotes_the_sources_when_the_model_is_down(chat_settings, guide):
    """No model answers (its port is closed): the extractive answer, not an error."""

    from chat import services
    from chat.gateway.types import Subject
    from chat.types import ChatOptions, End
    from inference.config import GENERATION, OPENAI, EndpointConfig, env_endpoint_specs
    from inference.registry import Registry, set_registry
    from tests.gateway.conftest import closed_port

    dead = EndpointConfig(
        name="dead-llm",
        kind=GENERATION,
        protocol=OPENAI,
        base_url=f"http://127.0.0.1:{closed_port()}/v1",
        model_name="x",
    )
    others = [spec.as_config() for spec in env_endpoint_specs() if spec.kind != GENERATION]
    previous = set_registry(Registry.static([dead, *others]))
    try:
        final = await services.collect(
            services.complete(
                subject=Subject(user_id=1),
                messages=[
                    {"role": "user", "content": f"빈집 철거비는 가구당 최대 얼마까지 지원받을 수 있나요? ({nonce()})"}
                ],
                options=ChatOptions(answer_mode="generative_fallback", params={"max_tokens": 30}),
            )
        )
    finally:
        set_registry(previous)
    assert isinstance(final, End), final
    assert final.model == "extractive" and "1,500만 원" in final.content and "[1]" in final.content
