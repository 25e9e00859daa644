"""What a question asks for, read without a model: the kind of answer, and the words it hangs on.

``expected`` is the kind of value a correct answer contains (an amount of money, a percentage,
a date...), or None for procedures, eligibility and definitions. ``anchors`` are the names and
years the answer must be about: a passage about 가온시 does not answer a question about 서림구,
and one about 2023 not a question about 2024, however similar the rest of the text.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from knowledge.text import lexical_terms, romanize

AMOUNT, PERCENT, COUNT, DATE, DURATION, PHONE, AGE, YEAR = (
    "amount", "percent", "count", "date", "duration", "phone", "age", "year",
)  # fmt: skip

# (kind, question pattern): the first that matches decides; order matters (a rate is a percentage).
_ASKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (PHONE, re.compile(r"전화|내선|연락처|번호로|phone|extension|call\b", re.I)),
    (PERCENT, re.compile(r"%|퍼센트|프로|비율|몇\s*할|금리|이자율|이율|percent|share of|interest rate|\brate\b", re.I)),
    (AGE, re.compile(r"몇\s*살|나이|몇\s*세|how old|\bage\b|aged", re.I)),
    (YEAR, re.compile(r"몇\s*년도|어느\s*해|what year|which year|built before|before which year", re.I)),
    (
        DURATION,
        re.compile(
            r"며칠|몇\s*일|몇\s*년|몇\s*개월|몇\s*달|몇\s*주|얼마\s*동안|얼마나\s*(?:된|오래|걸|지나|비어)|기간이\s*얼마|"
            r"how long|how many (?:days|weeks|months|years)",
            re.I,
        ),
    ),
    (DATE, re.compile(r"언제|몇\s*월|며칠까지|마감|날짜|일정|\bwhen\b|deadline|what date|which month", re.I)),
    (COUNT, re.compile(r"몇\s*(?:명|곳|개|동|가구|채|호|번|군데|마을|집)|how many", re.I)),
    (AMOUNT, re.compile(r"얼마|금액|최대|how much|amount|maximum|\bcost\b|\bpay\b|\bwon\b", re.I)),
)

# What each kind of answer looks like in a document.
_NUMBER = r"\d[\d,]*(?:\.\d+)?"
VALUE_PATTERNS: dict[str, re.Pattern[str]] = {
    AMOUNT: re.compile(
        rf"{_NUMBER}\s*(?:억|천|백)?\s*(?:만\s*)?원|{_NUMBER}\s*(?:million|billion|thousand)?\s*won", re.I
    ),
    PERCENT: re.compile(rf"{_NUMBER}\s*(?:%|퍼센트|percent)", re.I),
    COUNT: re.compile(
        rf"(?:{_NUMBER}|한|두|세|네|다섯|여섯|일곱|여덟|아홉|열)\s*(?:명|곳|개|동|가구|채|호|번|군데|마을|세대)"
        rf"|\b{_NUMBER}\s+(?:houses|households|homes|villages|people|shops|units|times)|\b(?:once|twice)\b",
        re.I,
    ),
    DATE: re.compile(
        r"\d{1,2}\s*월(?:\s*\d{1,2}\s*일)?|\d{4}\s*[.년-]\s*\d{1,2}|\b(?:january|february|march|april|may|june|july|august|september|october|november|december)\b|\d{1,2}\s*일(?:까지|부터)",
        re.I,
    ),
    DURATION: re.compile(rf"{_NUMBER}\s*(?:일|년|개월|달|주|시간|days?|weeks?|months?|years?|working days)", re.I),
    PHONE: re.compile(r"내선\s*\d{3,5}|\d{2,4}-\d{3,4}-\d{4}|extension\s*\d{3,5}|\b\d{3,5}\b", re.I),
    AGE: re.compile(rf"{_NUMBER}\s*(?:세|살)|aged\s*{_NUMBER}|{_NUMBER}\s*(?:or older|years old)|만\s*{_NUMBER}", re.I),
    YEAR: re.compile(r"\b(?:19|20)\d{2}\b"),
}

# Particles and endings stripped before a Korean word is compared as a name.
_PARTICLES = re.compile(
    r"(?:에서는|에서도|으로는|에서|에도|에는|으로|로는|까지|부터|의|은|는|이|가|을|를|에|도|로|와|과|랑)$"
)
_KO_PLACE = re.compile(r"^[\uac00-\ud7a3]{2,}(?:시|군|구)$")
_WORD = re.compile(r"[A-Za-z]+|[\uac00-\ud7a3]+|\d+")
_YEAR_IN_QUESTION = re.compile(r"\b((?:19|20)\d{2})(?:년|\b)")
# Capitalised words that are not names of a place or programme.
_COMMON_CAPITALS = frozenset({"i", "korea", "korean", "english", "if", "what", "how", "when", "which", "who", "is", "are",
                              "does", "do", "can", "the", "a", "in", "my", "for", "and", "or", "city", "county"})  # fmt: skip


# Words that say what kind of question it is, or belong to every document of this domain: they
# tell nothing about which passage answers it.
_QUESTION_WORDS = frozenset(
    """얼마 얼마나 언제 어디 어디서 어떻게 어떤 무엇 무슨 뭐 뭘 몇 누가 누구 왜 어느 정도 혹시 그럼 그리고 그런데 근데
    이거 그거 저거 그냥 진짜 정말 제가 저는 제 우리 저희 내가 나는 좀 더 또 다른 같은 말고 경우 때 수 것 거 건 게
    있어요 있나요 없나요 있는 없는 해요 하나요 돼요 되나요 되는 하는 주나요 줘요 받나요 받을 받으려면 하려면 해야
    알려 궁금 문의 말하는 이에요 예요 인가요 건가요 거예요 빈집 집 주택 지원 사업 신청 제도 안내
    먼저 제일 가장 정확히 구체적 구체적으로 지금 나중 나중에 오히려 예전 예전에 처음 처음에 중간 중간에 전부 각각 다시
    그동안 올해 작년 내년 요즘 보통 주로 대충 대략 이미 아직 바로 따로 같이 함께 모두 다 너무 많이 조금 거의 정도""".split()
)
_LATIN_QUESTION_WORDS = frozenset(
    """what how when where which who whom why does do did is are was were can could will would should the a an of for
    in on at to by with from my me i you your it its this that there their they if or and any much many long most
    maximum minimum get pay paid have has need needs someone vacant empty house houses home homes programme program
    support city county""".split()
)


# Korean verbs and adjectives, by their endings (no part-of-speech tagger here): a topic is a noun.
_VERBAL = re.compile(
    r"(?:려면|으면|하면|해야|해서|하고|하는|하니|했|려고|도록|거나|는데|은데|는지|은지|니까|어서|아서|데|요|까|니다|"
    r"면|야|게|고|지|서|며|주|줘|준|할|될|올|칠|갈|살|릴|길|볼|낼|쓸|팔|될|던|운|은|는|던|닌|런|라|나|들|쯤|씩|만)$"
)


@dataclass(frozen=True, slots=True)
class Question:
    text: str
    expected: str | None
    names: tuple[str, ...]  # place names as written (Korean stems, or Latin words)
    years: tuple[str, ...]
    terms: tuple[str, ...]  # lexical terms (knowledge.text.lexical_terms), distinct
    # What the question is about besides its names: Korean word stems, or Latin words (lower-case).
    topics: tuple[str, ...] = ()

    @property
    def latin(self) -> bool:
        return not re.search(r"[\uac00-\ud7a3]", self.text)

    def is_about(self, text: str) -> bool:
        """Whether ``text`` names every place and year the question names."""
        return all(mentions(name, text) for name in self.names) and all(y in text for y in self.years)


def read_question(text: str) -> Question:
    text = unicodedata.normalize("NFKC", text)
    expected = next((kind for kind, pattern in _ASKS if pattern.search(text)), None)
    names: list[str] = []
    previous_capital = False
    for i, word in enumerate(_WORD.findall(text)):
        capital = word[0].isupper() and word.lower() not in _COMMON_CAPITALS
        if re.match(r"[\uac00-\ud7a3]", word):
            stem = _PARTICLES.sub("", word)
            if _KO_PLACE.match(stem):
                names.append(stem)
        elif capital and len(word) >= 4 and i > 0 and not previous_capital:
            names.append(word)  # the first word of a capitalised run: "Gaon" of Gaon Urban Development Corporation
        previous_capital = capital
    years = tuple(dict.fromkeys(_YEAR_IN_QUESTION.findall(text)))
    topics: list[str] = []
    for word in _WORD.findall(text):
        if re.match(r"[\uac00-\ud7a3]", word):
            stem = _PARTICLES.sub("", word)
            if (
                len(stem) >= 2
                and stem not in _QUESTION_WORDS
                and word not in _QUESTION_WORDS
                and stem not in names
                and not _VERBAL.search(stem)
            ):
                topics.append(stem)
        elif word.isalpha() and len(word) >= 4 and word.lower() not in _LATIN_QUESTION_WORDS and word not in names:
            topics.append(word.lower())
    return Question(
        text,
        expected,
        tuple(dict.fromkeys(names)),
        years,
        tuple(dict.fromkeys(lexical_terms(text))),
        tuple(dict.fromkeys(topics)),
    )


def topic_in(topic: str, text: str) -> bool:
    """Whether ``text`` speaks of ``topic``: a Korean stem by its first syllables (two; three for
    long words, whose first two are often a word of their own: 주민등록등본 is not 주민), so
    particles and endings do not matter (수수료를 / 수수료는); a Latin word by its first five
    letters (demolish / demolition)."""
    if re.match(r"[\uac00-\ud7a3]", topic):
        return topic[: 3 if len(topic) >= 4 else 2] in text
    return topic[:5] in unicodedata.normalize("NFKC", text).lower()


def mentions(name: str, text: str) -> bool:
    """Whether ``text`` names the place ``name``, in either script (해담시 / Haedam)."""
    lowered = unicodedata.normalize("NFKC", text).lower()
    if re.match(r"[\uac00-\ud7a3]", name):
        if name in text:
            return True
        roman = romanize(name[:-1]) if len(name) > 2 else romanize(name)  # 해담시 -> haedam (without 시)
        return len(roman) >= 4 and roman in lowered
    latin = name.lower()
    if latin in lowered:
        return True
    # Written in Hangul: a place word (해담시, 누리시) whose romanization begins with the name;
    # not any word ("Nuri" is not 누리집, a website).
    places = (_PARTICLES.sub("", w) for w in re.findall(r"[\uac00-\ud7a3]+", text))
    return any(_KO_PLACE.match(p) and romanize(p).startswith(latin) for p in places)
