"""Ranking and answer metrics (binary relevance over documents)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np


def first_hit_rank(ranked: Sequence[int], relevant: set[int]) -> int | None:
    """1-based rank of the first relevant document in a ranking of distinct documents."""
    for i, doc in enumerate(ranked, start=1):
        if doc in relevant:
            return i
    return None


def hit_at(rank: int | None, k: int) -> float:
    return 1.0 if rank is not None and rank <= k else 0.0


def reciprocal_rank(rank: int | None) -> float:
    return 1.0 / rank if rank else 0.0


def ndcg_at(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    dcg = sum(1.0 / math.log2(i + 1) for i, doc in enumerate(ranked[:k], start=1) if doc in relevant)
    ideal = sum(1.0 / math.log2(i + 1) for i in range(1, min(len(relevant), k) + 1))
    return dcg / ideal if ideal else 0.0


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(seconds) * 1000, q)) if seconds else 0.0


_SPACES_IN_NUMBERS = re.compile(r"(?<=\d)[,\s](?=\d)")


def normalise_fact_text(text: str) -> str:
    """What fact matching compares: no whitespace, no thousands separators, lower-case Latin.

    An answer may write ``1200만원`` where the document says ``1,200만 원``.
    """
    return re.sub(r"\s+", "", _SPACES_IN_NUMBERS.sub("", text)).lower()


def contains_fact(text: str, fact: str) -> bool:
    return normalise_fact_text(fact) in normalise_fact_text(text)
