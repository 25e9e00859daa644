"""Request validation: 400 malformed, 413 too large, 422 out of bounds, with field errors."""

from __future__ import annotations

import json

import pytest

from chat.errors import PayloadTooLarge, UnprocessableRequest, ValidationFailed
from chat.gateway.validation import parse_json_body, validate_chat_request, validate_user_message

pytestmark = pytest.mark.fast

USER = {"role": "user", "content": "빈집 정비 지원금은 얼마인가요?"}


def openai(**extra):
    return {"model": "smollm2", "messages": [USER], **extra}


def test_it_accepts_and_normalises_an_openai_request():
    req = validate_chat_request(
        openai(
            stream=True,
            stream_options={"include_usage": True},
            temperature=0,
            top_p=1,
            max_completion_tokens=64,
            stop="\n\n",
            seed=7,
            n=1,
            user="u-1",
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            retrieval=False,
            collection="policies",
        ),
        openai=True,
    )
    assert req.messages == [USER] and req.model == "smollm2"
    assert req.stream and req.include_usage and not req.retrieval and req.collection == "policies"
    assert req.params == {
        "temperature": 0,
        "top_p": 1,
        "max_tokens": 64,
        "stop": ["\n\n"],
        "seed": 7,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
    }
    assert req.user == "u-1" and req.last_user_message == USER["content"]


def test_it_accepts_the_platform_payload():
    req = validate_chat_request({"message": "  안녕하세요  ", "conversation_id": 12, "stream": True}, openai=False)
    assert req.messages == [{"role": "user", "content": "안녕하세요"}]
    assert req.conversation_id == 12 and req.stream and req.retrieval
    extra = validate_chat_request({"message": "hi", "language": "ko"}, openai=False, extra_fields=["language"])
    assert extra.extra == {"language": "ko"}


def test_it_joins_text_content_parts_and_maps_the_developer_role():
    req = validate_chat_request(
        {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            ]
        },
        openai=True,
    )
    assert req.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a\nb"}]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ([], None),
        (openai(tools=[]), "tools"),
        (openai(logprobs=True), "logprobs"),
        ({"model": "smollm2"}, "messages"),
        (openai(messages="hi"), "messages"),
        (openai(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
        (openai(messages=[{"role": "user", "content": 5}]), "messages[0].content"),
        (openai(messages=[{"role": "user", "content": "x", "tool_calls": []}]), "messages[0]"),
        (openai(temperature="hot"), "temperature"),
        (openai(max_tokens=1.5), "max_tokens"),
        (openai(max_tokens=True), "max_tokens"),
        (openai(stream="yes"), "stream"),
        (openai(stream_options={"include_usage": True}), "stream_options"),
        (openai(max_tokens=10, max_completion_tokens=20), "max_tokens"),
        (openai(stop=[1]), "stop"),
        (openai(model=""), "model"),
        ({"message": "x", "messages": [USER]}, "message"),
        ({"message": "x", "n": 1}, "n"),
    ],
)
def test_it_rejects_malformed_requests_with_400(payload, field):
    openai_mode = not (isinstance(payload, dict) and "message" in payload)
    with pytest.raises(ValidationFailed) as exc:
        validate_chat_request(payload, openai=openai_mode)
    assert type(exc.value) is ValidationFailed and exc.value.http_status == 400
    if field:
        assert field in exc.value.fields, exc.value.fields


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        (openai(max_tokens=100_000), "max_tokens"),
        (openai(max_completion_tokens=0), "max_completion_tokens"),
        (openai(temperature=2.5), "temperature"),
        (openai(top_p=-0.1), "top_p"),
        (openai(presence_penalty=3), "presence_penalty"),
        (openai(n=2), "n"),
        (openai(stop=["a", "b", "c", "d", "e"]), "stop"),
        (
            openai(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
            "messages[0].content[0]",
        ),
        (openai(messages=[{"role": "system", "content": "only system"}]), "messages"),
        (openai(messages=[USER] * 51), "messages"),
    ],
)
def test_it_rejects_out_of_bounds_requests_with_422(payload, field):
    with pytest.raises(UnprocessableRequest) as exc:
        validate_chat_request(payload, openai=True)
    assert exc.value.http_status == 422 and field in exc.value.fields, exc.value.fields
    assert exc.value.as_dict()["error"]["code"] == "unprocessable"


def test_it_rejects_too_large_messages_with_413(settings):
    settings.GATEWAY_MAX_MESSAGE_CHARS = 100
    settings.GATEWAY_MAX_PROMPT_CHARS = 250
    with pytest.raises(PayloadTooLarge) as exc:
        validate_chat_request(openai(messages=[{"role": "user", "content": "x" * 101}]), openai=True)
    assert exc.value.http_status == 413 and "messages[0].content" in exc.value.fields
    with pytest.raises(PayloadTooLarge) as exc:
        validate_chat_request(openai(messages=[{"role": "user", "content": "x" * 100}] * 3), openai=True)
    assert "messages" in exc.value.fields
    with pytest.raises(PayloadTooLarge):
        validate_chat_request({"message": "x" * 101}, openai=False)
    with pytest.raises(PayloadTooLarge):
        validate_user_message("y" * 101)


def test_it_reports_every_field_error_and_the_most_basic_status_wins():
    with pytest.raises(ValidationFailed) as exc:
        validate_chat_request(openai(temperature=9, top_p="x"), openai=True)
    assert type(exc.value) is ValidationFailed  # a type error (400) outranks a range error (422)
    assert set(exc.value.fields) == {"temperature", "top_p"}


def test_the_body_parser_refuses_big_or_non_json_bodies(settings):
    settings.GATEWAY_MAX_BODY_BYTES = 1000
    assert parse_json_body(json.dumps(openai()).encode()) == openai()
    with pytest.raises(PayloadTooLarge):
        parse_json_body(b"{" + b" " * 1000 + b"}")
    for bad in (b"", b"{", b"[1]", b"\xff\xfe", "null"):
        with pytest.raises(ValidationFailed) as exc:
            parse_json_body(bad)
        assert exc.value.http_status == 400


def test_user_messages_must_be_non_blank_strings():
    assert validate_user_message("  hi ") == "hi"
    for bad in ("", "   ", None, 5, "a\x00b"):
        with pytest.raises(ValidationFailed):
            validate_user_message(bad)
