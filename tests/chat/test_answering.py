"""Reading questions and quoting sources without a model (chat.answering): pure functions, no services."""

from __future__ import annotations

import pytest

from chat.answering.extractive import extractive_answer
from chat.answering.question import AMOUNT, DATE, DURATION, PERCENT, mentions, read_question
from chat.answering.relevance import nothing_relevant
from chat.prompt import Source
from knowledge.text import is_name, name_lookups, name_terms, romanize
from knowledge.types import ChunkRef, RetrievedChunk

pytestmark = pytest.mark.fast

SUBSIDY = (
    "빈집 철거 보조금 신청 절차\n\n1. 보조금 규모\n철거 보조금은 주택 한 동당 최대 1,500만 원까지 지원됩니다. "
    "슬레이트 지붕이 있는 경우 슬레이트 처리비 최대 700만 원을 별도로 지원합니다."
)
SEORIM = "서림구 빈집 철거비 지원사업 안내 (2025년)\n\n철거비: 한 동당 최대 1,200만 원. 신청 기간은 3월 10일부터 4월 30일까지입니다."


def source(n: int, text: str, title: str, similarity: float = 0.95) -> Source:
    chunk = ChunkRef(n, n, 1, 0, text, title, "", "", "ko")
    return Source(n=n, hit=RetrievedChunk(chunk=chunk, score=1 / n, url=f"/d/{n}", semantic_score=similarity))


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        ("철거 보조금은 최대 얼마예요?", AMOUNT),
        ("신청은 언제까지 해요?", DATE),
        ("빈집은 사람이 안 산 지 얼마나 된 집이에요?", DURATION),
        ("금리가 몇 %예요?", PERCENT),
        ("What share of the rent does the city pay?", PERCENT),
        ("빈집 정비는 어떤 방식이 있어요?", None),
    ],
)
def test_it_reads_what_kind_of_value_a_question_asks_for(question, kind):
    assert read_question(question).expected == kind


def test_it_reads_the_places_and_years_a_question_hangs_on():
    q = read_question("서림구에서 2024년에 철거비를 얼마 줬어요?")
    assert q.names == ("서림구",) and q.years == ("2024",)
    assert read_question("How much does Gaon Urban Development Corporation pay?").names == ("Gaon",)


def test_places_are_recognised_across_scripts():
    assert romanize("해담시") == "haedamsi" and romanize("달빛군") == "dalbitgun"
    assert mentions("Haedam", "해담시의 재산세 경감") and mentions("해담시", "Haedam City tax relief")
    assert not mentions("Nuri", "누리집에서 신청하세요")  # a website (누리집), not 누리시


def test_cross_script_name_terms_and_lookups():
    assert name_terms("Dalbit County 달빛군은") == ["l:dalbit", "l:county", "r:dalbitguneun"]
    lookups = name_lookups("달빛군 Haedam")
    assert lookups[0].own == "r:dalbitgun" and "l:dalbit" in lookups[0].terms
    assert lookups[1].prefix == "r:haedam" and lookups[1].own == "l:haedam"
    assert is_name(0, 1000) and not is_name(50, 1000)


def test_an_extractive_answer_quotes_the_sentence_holding_the_value_with_its_citation():
    answer = extractive_answer(
        "빈집 철거 보조금은 한 동당 최대 얼마까지 나와요?", [source(1, SUBSIDY, "빈집 철거 보조금 신청 절차")]
    )
    assert answer is not None and "1,500만 원" in answer and answer.endswith("[1]")


def test_an_extractive_answer_refuses_a_source_about_another_place_or_year():
    sources = [source(1, SEORIM, "서림구 빈집 철거비 지원사업 안내 (2025년)")]
    assert extractive_answer("가온시 빈집 철거비는 최대 얼마예요?", sources) is None
    assert extractive_answer("서림구 2024년 철거비 신청 기간은 언제였어요?", sources) is None
    assert "3월 10일" in (extractive_answer("서림구 철거비 신청 기간은 언제예요?", sources) or "")


def test_an_extractive_answer_refuses_when_the_value_asked_for_is_not_stated():
    text = "이행강제금은 명령을 이행할 때까지 1년에 두 번까지 반복해서 부과됩니다."
    assert extractive_answer("이행강제금은 한 번에 얼마예요?", [source(1, text, "안전조치 명령")]) is None


def test_the_gate_refuses_off_topic_questions_and_keeps_related_ones():
    sources = [source(1, SUBSIDY, "빈집 철거 보조금 신청 절차")]
    assert nothing_relevant("오늘 서울 날씨 어때요?", sources, floor=0.87)
    assert nothing_relevant("철거 보조금 신청할 때 뭐가 필요해요?", [], floor=0.87)
    assert not nothing_relevant("철거 보조금 신청할 때 뭐가 필요해요?", sources, floor=0.87)
    low = [source(1, SUBSIDY, "빈집 철거 보조금 신청 절차", similarity=0.80)]
    assert nothing_relevant("철거 보조금 신청할 때 뭐가 필요해요?", low, floor=0.87)
