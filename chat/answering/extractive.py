"""Extractive answers: quote the sentences of the top sources that best answer the question.

No model call. A sentence qualifies when its source is about what the question names
(``Question.names``, ``Question.years``), it holds the kind of value asked for (an amount,
a date...) and it shares enough of the question's words; otherwise the answer is "not found
in the documents". The same reading decides whether a generated answer has anything to
stand on (``has_evidence``). Thresholds are set by the evaluation (docs/answer-quality.md).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from chat.answering.glossary import translate
from chat.answering.question import VALUE_PATTERNS, Question, read_question, topic_in
from chat.prompt import Source
from knowledge.text import lexical_terms, split_sentences

# Question topics a source may lack and still answer (questions word things differently).
MAX_TOPICS_MISSING = 1
MIN_SENTENCE_CHARS = 12
# Cross-language (an English question, Korean sources): words cannot be compared; the dense
# similarity of the source to the question must reach this instead.
MIN_CROSS_LINGUAL_SIMILARITY = 0.88
SOURCES_READ = 3
MAX_SENTENCES = 3
# A second sentence is quoted when it scores at least this share of the best one.
SECOND_SENTENCE_SHARE = 0.8
_HANGUL = re.compile(r"[\uac00-\ud7a3]")


@dataclass(frozen=True, slots=True)
class Evidence:
    source: Source
    sentence: str
    score: float


def _weights(question: Question, sources: Sequence[Source]) -> dict[str, float]:
    """Term weights from the sources themselves: words every source shares (빈집, 지원) weigh little."""
    df = Counter(t for s in sources for t in set(lexical_terms(f"{s.title}\n{s.text}")))
    n = max(len(sources), 1)
    return {t: math.log(1 + (n + 1) / (df[t] + 0.5)) for t in question.terms}


def _coverage(terms: set[str], weights: dict[str, float]) -> float:
    total = sum(weights.values())
    return sum(w for t, w in weights.items() if t in terms) / total if total else 0.0


def _cross_lingual(question: Question, source: Source) -> bool:
    return question.latin == bool(_HANGUL.search(source.text))


def _topics_missing(question: Question, text: str, *, cross: bool = False) -> int:
    if not cross:
        return sum(not topic_in(t, text) for t in question.topics)
    # Across languages only the glossary's words can be judged.
    translated = [translate(t) for t in question.topics]
    return sum(not any(topic_in(w, text) for w in words) for words in translated if words)


def _judged_topics(question: Question, cross: bool) -> int:
    return sum(bool(translate(t)) for t in question.topics) if cross else len(question.topics)


def topic_coverage(question: Question, source: Source) -> float:
    """The share of the question's topics the source names (1.0 when none can be judged)."""
    cross = _cross_lingual(question, source)
    judged = _judged_topics(question, cross)
    if not judged:
        return 1.0
    return 1 - _topics_missing(question, f"{source.title}\n{source.text}", cross=cross) / judged


def find_evidence(question: Question, sources: Sequence[Source]) -> list[Evidence]:
    """The sentences to quote, best first; [] when the sources do not answer the question.

    A source qualifies when it names what the question names (places, years) and, in the
    question's language, speaks of its topics (at most ``MAX_TOPICS_MISSING`` of them absent).
    A sentence qualifies when it holds the kind of value asked for (if any) and speaks of at
    least one topic; sentences are ranked by the question words they share.
    """
    read = list(sources[:SOURCES_READ])
    weights = _weights(question, sources)
    pattern = VALUE_PATTERNS.get(question.expected or "")
    found: list[Evidence] = []
    for rank, source in enumerate(read):
        if not question.is_about(f"{source.title}\n{source.text}"):
            continue
        cross = _cross_lingual(question, source)
        context = f"{source.title}\n{source.text}"
        if cross and (source.hit.semantic_score or 0.0) < MIN_CROSS_LINGUAL_SIMILARITY:
            continue
        if _topics_missing(question, context, cross=cross) > min(1, len(question.topics) // 3):
            continue
        judged = _judged_topics(question, cross)
        for span in split_sentences(source.text):
            sentence = source.text[span.start : span.end].strip()
            if len(sentence) < MIN_SENTENCE_CHARS:
                continue  # a heading, a list marker
            if pattern is not None and not pattern.search(sentence):
                continue
            if judged and _topics_missing(question, sentence, cross=cross) == judged:
                continue  # speaks of none of the question's topics
            if cross:
                # Few words to compare: the better-ranked source and the earlier sentence.
                score = 1.0 / (rank + 1) - span.start * 1e-6
            else:
                score = _coverage(set(lexical_terms(sentence)), weights) - rank * 0.01
            found.append(Evidence(source, sentence, score))
    found.sort(key=lambda e: -e.score)
    if not found:
        return []
    best = found[0]
    picked = [best]
    for other in found[1:]:
        if len(picked) == MAX_SENTENCES:
            break
        if other.score >= best.score * SECOND_SENTENCE_SHARE and other.sentence != best.sentence:
            picked.append(other)
    return picked


def extractive_answer(question_text: str, sources: Sequence[Source]) -> str | None:
    """The quoted sentences, each cited ``[n]``; None when the documents do not answer it."""
    evidence = find_evidence(read_question(question_text), sources)
    if not evidence:
        return None
    return " ".join(f"{e.sentence} [{e.source.n}]" for e in evidence)


def has_evidence(question_text: str, sources: Sequence[Source]) -> bool:
    return bool(find_evidence(read_question(question_text), sources))
