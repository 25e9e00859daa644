"""Triton python-backend tokenizer: texts (or text pairs) -> input_ids, attention_mask.

One file serves embedding_tokenizer (input TEXT) and reranker_tokenizer
(inputs QUERY, PASSAGE: encoded as a sequence pair); the two copies in the
model repository are kept identical (tests/deploy/test_triton_models.py).
The tokenizer is the model's own, exported as 1/tokenizer.json (see README.md).

Each request's rows are padded to the smallest PAD_BUCKETS length that fits:
the encoder's dynamic batcher only merges requests whose shapes are equal, so
a few fixed lengths keep batching effective without padding every query to 512.
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils  # provided by Triton's python backend
from tokenizers import Tokenizer


def _text(value: object) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.max_length = int(params.get("MAX_LENGTH", "512"))
        buckets = [int(b) for b in params.get("PAD_BUCKETS", "").split(",") if b.strip()]
        self.buckets = sorted(b for b in buckets if b <= self.max_length) or [self.max_length]
        self.input_names = [spec["name"] for spec in config["input"]]
        if len(self.input_names) not in (1, 2):
            raise ValueError(f"expected one text input or a (query, passage) pair, got {self.input_names}")

        path = os.path.join(args["model_repository"], args["model_version"], "tokenizer.json")
        self.tokenizer = Tokenizer.from_file(path)
        self.tokenizer.no_padding()  # padding is ours (per request, to a bucket)
        self.tokenizer.enable_truncation(max_length=self.max_length)
        pad = params.get("PAD_TOKEN", "<pad>")
        pad_id = self.tokenizer.token_to_id(pad)
        if pad_id is None:
            pad_id = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id

    def _bucket(self, length: int) -> int:
        for size in self.buckets:
            if length <= size:
                return size
        return self.max_length

    def execute(self, requests: list) -> list:
        # All rows of all requests in one encode_batch call (parallel, in Rust).
        counts: list[int] = []
        inputs: list = []
        for request in requests:
            columns = [
                pb_utils.get_input_tensor_by_name(request, name).as_numpy().reshape(-1) for name in self.input_names
            ]
            counts.append(len(columns[0]))
            if len(columns) == 1:
                inputs.extend(_text(v) for v in columns[0])
            else:
                inputs.extend((_text(q), _text(p)) for q, p in zip(columns[0], columns[1], strict=True))
        encodings = self.tokenizer.encode_batch(inputs)

        responses = []
        offset = 0
        for count in counts:
            chunk = encodings[offset : offset + count]
            offset += count
            width = self._bucket(max((len(e.ids) for e in chunk), default=1))
            ids = np.full((count, width), self.pad_id, dtype=np.int64)
            mask = np.zeros((count, width), dtype=np.int64)
            for row, encoding in enumerate(chunk):
                n = min(len(encoding.ids), width)
                ids[row, :n] = encoding.ids[:n]
                mask[row, :n] = 1
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor("input_ids", ids), pb_utils.Tensor("attention_mask", mask)]
                )
            )
        return responses
