"""Normalisation, sentence splitting, token counting and chunking (pure functions)."""

from __future__ import annotations

import itertools
import unicodedata

import pytest

from knowledge.text import (
    approx_token_count,
    chunk_text,
    count_tokens,
    detect_language,
    normalize_text,
    split_sentences,
)

pytestmark = pytest.mark.fast

KOREAN = (
    "빈집 정비 지원사업은 1년 이상 아무도 살지 않은 주택을 철거하거나 고치는 사업입니다. "
    "시·군·구가 매년 사업 계획을 세웁니다. 예산 범위 안에서 대상 주택을 선정합니다! "
    "소유자는 2월부터 3월 사이에 신청서를 냅니다. 선정 결과는 4월에 알려 줍니다.\n"
    "- 철거 보조금: 최대 1,500만 원\n- 슬레이트 처리비: 최대 700만 원\n"
    "Owners may also apply in English. The district office answers within 30 days? Yes."
)


def test_it_normalises_to_nfc_and_collapses_whitespace():
    decomposed = unicodedata.normalize("NFD", "빈집  정비\u00a0지원\u200b사업")
    assert decomposed != "빈집 정비 지원사업"
    assert normalize_text(f"  {decomposed}\r\n\r\n\r\n\r\n다음\t문단 \x0c ") == "빈집 정비 지원사업\n\n다음 문단"


def test_it_splits_korean_and_english_sentences_and_lines():
    text = normalize_text(KOREAN)
    sentences = [text[s.start : s.end] for s in split_sentences(text)]
    assert sentences[0].endswith("사업입니다.")
    assert "예산 범위 안에서 대상 주택을 선정합니다!" in sentences
    assert "- 철거 보조금: 최대 1,500만 원" in sentences  # a list item is a unit of its own
    assert "The district office answers within 30 days?" in sentences
    assert all(s == s.strip() for s in sentences)
    assert split_sentences("제1.5조에 따라 3.14를 씁니다.") == split_sentences("제1.5조에 따라 3.14를 씁니다.")[:1]


def test_chunks_respect_the_budget_keep_sentences_whole_and_overlap():
    text = normalize_text(" ".join(f"{i}번째 빈집은 철거 대상입니다. House {i} is vacant." for i in range(30)))
    chunks = chunk_text(text, max_tokens=60, overlap_tokens=20)
    assert len(chunks) > 3
    sentences = {text[s.start : s.end] for s in split_sentences(text)}
    for chunk in chunks:
        assert chunk.token_count <= 60
        assert chunk.text == text[chunk.char_start : chunk.char_end]
        # Every chunk starts and ends on a sentence boundary.
        assert any(chunk.text.startswith(s) for s in sentences) and any(chunk.text.endswith(s) for s in sentences)
    for previous, current in itertools.pairwise(chunks):
        assert current.char_start < previous.char_end, "consecutive chunks overlap"
        assert current.char_end > previous.char_end, "every chunk moves forward"
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(text)


def test_without_overlap_chunks_tile_the_text():
    text = normalize_text(f"{KOREAN} {KOREAN}")
    chunks = chunk_text(text, max_tokens=50, overlap_tokens=0)
    for previous, current in itertools.pairwise(chunks):
        assert current.char_start >= previous.char_end


def test_an_overlong_sentence_is_cut_to_fit():
    text = "빈집정비지원사업안내문" * 80  # no spaces, no punctuation
    chunks = chunk_text(text, max_tokens=40, overlap_tokens=0)
    assert len(chunks) > 1
    assert all(c.token_count <= 40 for c in chunks)
    assert "".join(c.text for c in chunks) == text


def test_overlap_must_be_smaller_than_the_budget():
    with pytest.raises(ValueError):
        chunk_text("문장.", max_tokens=20, overlap_tokens=20)


def test_chunk_size_comes_from_settings(settings):
    settings.KNOWLEDGE_CHUNK_TOKENS = 40
    settings.KNOWLEDGE_CHUNK_OVERLAP_TOKENS = 0
    assert all(c.token_count <= 40 for c in chunk_text(normalize_text(f"{KOREAN} {KOREAN}")))


def test_token_counters_agree_roughly():
    for sentence in [s for s in normalize_text(KOREAN).split("\n") if s]:
        exact, approx = count_tokens(sentence), approx_token_count(sentence)
        # The estimate errs on the safe side (more tokens), within reason.
        assert exact * 0.9 <= approx <= exact * 1.6, (sentence, exact, approx)


def test_language_detection():
    assert detect_language("빈집 철거 보조금 신청 절차 (Demolition subsidy)") == "ko"
    assert detect_language("Vacant house programs overview, 빈집") == "en"
    assert detect_language("1234 5678") == "ko"
