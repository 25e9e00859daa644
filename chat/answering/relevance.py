"""Whether retrieval found anything the question could rest on (else: the not-found reply).

Used before a model is asked: a model given unrelated sources invents an answer. The test is
looser than an extractive answer's (a generated answer may use a source whose wording
differs): nothing is relevant when there is no source, when no source names the places and
years the question names, when the best source is less similar than
ChatSettings.relevance_floor, or when no source names at least a third of the question's
topics (across languages, through the glossary). The evaluation set these (docs/answer-quality.md).
"""

from __future__ import annotations

from collections.abc import Sequence

from chat.answering.extractive import topic_coverage
from chat.answering.question import read_question
from chat.prompt import Source

MIN_TOPIC_COVERAGE = 1 / 3


def nothing_relevant(question_text: str, sources: Sequence[Source], floor: float) -> bool:
    if not sources:
        return True
    best = max((s.hit.semantic_score or 0.0) for s in sources)
    if best and best < floor:
        return True
    question = read_question(question_text)
    about = [s for s in sources if question.is_about(f"{s.title}\n{s.text}")]
    return not about or max(topic_coverage(question, s) for s in about) < MIN_TOPIC_COVERAGE
