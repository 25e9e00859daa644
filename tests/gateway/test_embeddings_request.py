"""/v1/embeddings at the edge: what a request may hold, and the OpenAI shape of the answer (no services)."""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from chat.errors import PayloadTooLarge, ValidationFailed
from chat.renderers.openai import embeddings_json
from chat.services.embeddings import validate_embeddings_request

pytestmark = [pytest.mark.fast]


def test_it_accepts_a_string_or_a_list_and_the_platform_extras():
    one = validate_embeddings_request({"model": "e5", "input": "빈집"})
    assert (one.texts, one.model, one.encoding_format, one.input_type) == (["빈집"], "e5", "float", "passage")
    many = validate_embeddings_request({"input": ["a", "b"], "encoding_format": "base64", "input_type": "query"})
    assert (many.texts, many.model, many.encoding_format, many.input_type) == (["a", "b"], None, "base64", "query")
    assert validate_embeddings_request({"input": "a", "dimensions": 384, "user": "u-1"}).dimensions == 384


@pytest.mark.parametrize(
    ("payload", "error", "field"),
    [
        ([], ValidationFailed, None),
        ({"input": [1, 2]}, ValidationFailed, "input"),
        ({"input": [[1, 2]]}, ValidationFailed, "input"),
        ({"input": []}, ValidationFailed, "input"),
        ({"input": ["ok", " "]}, ValidationFailed, "input"),
        ({"input": "a", "encoding_format": "int8"}, ValidationFailed, "encoding_format"),
        ({"input": "a", "input_type": "document"}, ValidationFailed, "input_type"),
        ({"input": "a", "dimensions": 0}, ValidationFailed, "dimensions"),
        ({"input": "a", "model": ""}, ValidationFailed, "model"),
        ({"input": "a", "tools": []}, ValidationFailed, "tools"),
        ({"input": ["a"] * 257}, PayloadTooLarge, "input"),
        ({"input": "x" * 4001}, PayloadTooLarge, "input"),
    ],
)
def test_it_refuses_what_it_cannot_embed(payload, error, field):
    with pytest.raises(error) as exc:
        validate_embeddings_request(payload)
    assert exc.type is error
    if field:
        assert field in exc.value.fields


def test_the_answer_has_openai_shape_in_floats_or_base64():
    vectors = np.array([[0.1, -0.2, 0.3], [1 / 3, 0.0, -1.0]], dtype=np.float32)
    floats = orjson.loads(embeddings_json("e5", vectors, prompt_tokens=12, encoding_format="float"))
    assert floats["object"] == "list" and floats["model"] == "e5"
    assert floats["usage"] == {"prompt_tokens": 12, "total_tokens": 12}
    assert [(d["object"], d["index"]) for d in floats["data"]] == [("embedding", 0), ("embedding", 1)]
    # Each float is the shortest decimal of the float32: it reads back as exactly the same float32.
    assert np.array_equal(np.array([d["embedding"] for d in floats["data"]], dtype=np.float32), vectors)
    packed = orjson.loads(embeddings_json("e5", vectors, prompt_tokens=12, encoding_format="base64"))
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in packed["data"]]
    assert np.array_equal(np.stack(decoded), vectors)
