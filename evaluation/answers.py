"""Answer evaluation: the dataset's questions through the real answer pipeline (``chat.services.complete``).

Scored per question: every fact of the question in the answer (normalised: spaces and
thousands separators do not count), the answer's cited source holding the fact, and for the
unanswerable questions a "not found in the documents" reply. Runs with retrieval scoped to the
evaluation's collections, the response cache and rate limits off (they would measure
themselves, not the answers).
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync
from django.test.utils import override_settings

from chat import services
from chat.gateway.types import Subject
from chat.types import ChatOptions, End
from evaluation import metrics
from evaluation.questions import Question, questions
from evaluation.retrieval import Corpus
from knowledge.models import Chunk

# What a model says when the documents do not hold the answer (the platform's own reply is
# recognised by its ``model``, "not-found").
_NOT_FOUND_PHRASES = re.compile(
    r"찾지 못했|찾을 수 없|자료에 없|문서에 없|나와 있지 않|확인되지 않|알 수 없|not (?:in|found in) the (?:documents|sources)|"
    r"do(?:es)? not (?:say|mention|contain)|no information",
    re.I,
)


@dataclass
class AnswerResult:
    mode: str
    answerable: int = 0
    answered: int = 0  # answerable questions not refused as not-found
    facts_all: int = 0  # every fact of the question in the answer
    facts_any: int = 0  # at least one
    cited_fact: int = 0  # a cited source holds the facts (and is one of the question's documents)
    unanswerable: int = 0
    refused: int = 0  # unanswerable questions answered "not found"
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    by_model: dict[str, int] = field(default_factory=dict)  # curated / extractive / not-found / the LLM's name
    wrong: list[str] = field(default_factory=list)  # unanswerable questions that got an answer

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(
            fact_rate=self.rate(self.facts_all, self.answerable),
            refusal_rate=self.rate(self.refused, self.unanswerable),
        )
        return d

    @staticmethod
    def rate(part: int, whole: int) -> float:
        return round(part / whole, 4) if whole else 0.0


def _is_not_found(end: End) -> bool:
    return end.model == "not-found" or bool(_NOT_FOUND_PHRASES.search(end.content))


def _document_texts(corpus: Corpus) -> dict[int, str]:
    texts: dict[int, list[str]] = defaultdict(list)
    for doc_id, text in (
        Chunk.objects.filter(document_id__in=set(corpus.doc_ids.values()))
        .order_by("ordinal")
        .values_list("document_id", "text")
    ):
        texts[doc_id].append(text)
    return {doc: "\n".join(parts) for doc, parts in texts.items()}


async def _ask(question: Question, corpus: Corpus, mode: str) -> tuple[End | None, float]:
    options = ChatOptions(
        retrieval=True, collections=corpus.collection_ids, answer_mode=mode, params={"temperature": 0.0}
    )
    subject = Subject(ip="127.0.0.1", session_key="evaluation", is_anonymous=True)
    started = time.perf_counter()
    final = await services.collect(
        services.complete(subject=subject, messages=[{"role": "user", "content": question.text}], options=options)
    )
    return (final if isinstance(final, End) else None), time.perf_counter() - started


def evaluate_answers(corpus: Corpus, *, mode: str) -> AnswerResult:
    result = AnswerResult(mode)
    documents = _document_texts(corpus)
    latencies: list[float] = []
    with override_settings(RATELIMIT_ENABLED=False, RESPONSE_CACHE_ENABLED=False, CHAT_ANONYMOUS_ENABLED=True):
        for q in questions():
            end, seconds = async_to_sync(_ask)(q, corpus, mode)
            latencies.append(seconds)
            if end is not None:
                result.by_model[end.model or "?"] = result.by_model.get(end.model or "?", 0) + 1
            refused = end is None or _is_not_found(end)
            if not q.answerable:
                result.unanswerable += 1
                result.refused += refused
                if not refused:
                    result.wrong.append(q.id)
                continue
            result.answerable += 1
            if refused:
                continue
            result.answered += 1
            found = [metrics.contains_fact(end.content, f) for f in q.facts]
            result.facts_all += bool(found) and all(found)
            result.facts_any += any(found)
            relevant = corpus.relevant_ids(q)
            cited = [c["document_id"] for c in end.citations if c.get("cited") and c.get("document_id") in relevant]
            result.cited_fact += any(
                all(metrics.contains_fact(documents.get(d, ""), f) for f in q.facts) for d in cited
            )
    result.p50_ms = metrics.percentile_ms(latencies, 50)
    result.p95_ms = metrics.percentile_ms(latencies, 95)
    return result


@dataclass
class GateResult:
    """The not-found gate a generated answer passes first (``chat.answering.relevance``), without a model."""

    answerable: int = 0
    answerable_refused: int = 0
    unanswerable: int = 0
    unanswerable_refused: int = 0
    off_topic: int = 0
    off_topic_refused: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def evaluate_gate(corpus: Corpus, *, top_k: int = 5, floor: float | None = None) -> GateResult:
    from chat.answering.relevance import nothing_relevant
    from chat.config import get_config_sync
    from chat.prompt import number_sources
    from knowledge.services import retrieve

    floor = get_config_sync().relevance_floor if floor is None else floor
    result = GateResult()

    async def run() -> None:
        for q in questions():
            hits = await retrieve(q.text, filters=corpus.filters, top_k=top_k)
            refused = nothing_relevant(q.text, number_sources(hits), floor)
            if q.answerable:
                result.answerable += 1
                result.answerable_refused += refused
            elif q.off_topic:
                result.off_topic += 1
                result.off_topic_refused += refused
            else:
                result.unanswerable += 1
                result.unanswerable_refused += refused

    async_to_sync(run)()
    return result
