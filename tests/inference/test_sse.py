"""The SSE decoder against every way a network can split a stream."""

from __future__ import annotations

import json

import pytest

from inference.clients.openai import _parse_event
from inference.errors import UpstreamClientError, UpstreamServerError
from inference.sse import SSEDecoder

pytestmark = pytest.mark.fast

STREAM = (
    ": keep-alive\r\n\r\n"
    'data: {"choices":[{"delta":{"content":"빈집"}}]}\r\n\r\n'
    ": ping\n\n"
    'data: {"choices":[{"delta":{"content":" 정책"}}]}\n\n'
    'data: {"choices":[{"delta":{},"finish_reason":"stop"}]}\r\r'
    'data: {"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2}}\n\n'
    "data: [DONE]\n\n"
).encode()


def decode_all(pieces: list[bytes]) -> list:
    decoder = SSEDecoder()
    events = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
    events.extend(decoder.close())
    return events


def test_it_decodes_the_stream_in_one_piece():
    events = decode_all([STREAM])
    assert [e.data for e in events][-1] == "[DONE]"
    assert len(events) == 5


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_it_decodes_the_same_events_whatever_the_split_point(cut):
    # Every byte boundary, including inside \r\n and inside a 3-byte Korean character.
    assert decode_all([STREAM[:cut], STREAM[cut:]]) == decode_all([STREAM])


def test_it_decodes_byte_by_byte():
    assert decode_all([bytes([b]) for b in STREAM]) == decode_all([STREAM])


def test_it_joins_multi_line_data_and_reads_event_names():
    events = decode_all([b"event: error\ndata: line1\ndata: line2\nid: 7\n\n"])
    assert events[0].event == "error" and events[0].data == "line1\nline2" and events[0].id == "7"


def test_it_flushes_an_unterminated_last_event():
    assert [e.data for e in decode_all([b"data: [DONE]"])] == ["[DONE]"]


def test_it_parses_content_finish_and_usage_chunks():
    chunks = [_parse_event(e, "x") for e in decode_all([STREAM])]
    assert "".join(c.text for c in chunks if c) == "빈집 정책"
    assert chunks[2].finish_reason == "stop"
    assert chunks[3].usage.prompt_tokens == 5 and chunks[3].usage.completion_tokens == 2
    assert chunks[4] is None  # [DONE]


def test_it_raises_typed_errors_for_error_events():
    (server,) = decode_all([b'data: {"error": {"message": "boom", "code": 500}}\n\n'])
    with pytest.raises(UpstreamServerError, match="boom"):
        _parse_event(server, "x")
    (client,) = decode_all([b'event: error\ndata: {"error": {"message": "too long", "code": 400}}\n\n'])
    with pytest.raises(UpstreamClientError, match="too long"):
        _parse_event(client, "x")
    (garbage,) = decode_all([b"data: {not json\n\n"])
    with pytest.raises(UpstreamServerError, match="malformed"):
        _parse_event(garbage, "x")


def test_it_keeps_json_intact():
    payload = {"choices": [{"delta": {"content": "a\nb"}}]}
    (event,) = decode_all([f"data: {json.dumps(payload)}\n\n".encode()])
    assert json.loads(event.data) == payload
