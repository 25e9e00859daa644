"""A small English-Korean glossary of this domain, for judging sources across languages.

An English question about a Korean document (and the reverse) shares no words with it, so
``find_evidence`` translates the question's topics through this list before checking that a
source and a sentence speak of them. Words it lacks are not judged. Extend it with the
vocabulary of your own documents (a row: English stem, then Korean stems).
"""

from __future__ import annotations

# English word stems (first five letters are compared) -> Korean stems.
EN_KO: dict[str, tuple[str, ...]] = {
    "demolish": ("철거",), "demolition": ("철거",), "remodel": ("리모델링", "개량"), "repair": ("수리", "개량", "리모델링"),
    "renovat": ("수리", "리모델링", "개량"), "loan": ("융자", "대출"), "interest": ("금리", "이자"),
    "subsidy": ("보조금", "지원금"), "grant": ("보조금", "지원금"), "rent": ("임대", "임차", "월세"),
    "tenant": ("임차인", "세입자", "입주"), "lease": ("임대",), "tax": ("세",), "property": ("재산",),
    "shop": ("점포", "상가"), "store": ("점포", "상가"), "youth": ("청년",), "young": ("청년",),
    "elderly": ("어르신", "고령", "노인"), "older": ("어르신", "고령", "세 이상"), "fire": ("화재", "소방"),
    "inspection": ("점검",), "survey": ("실태조사", "조사"), "village": ("마을",), "shared": ("공유",),
    "purchase": ("매입", "구입"), "buy": ("매입", "구입", "매수"), "slate": ("슬레이트",), "roof": ("지붕",),
    "fee": ("수수료",), "insurance": ("보험",), "inherit": ("상속",), "deadline": ("마감", "기한", "까지"),
    "apply": ("신청",), "application": ("신청",), "owner": ("소유자",), "foreign": ("외국인",),
    "interpret": ("통역",), "order": ("명령",), "dangerous": ("위험",), "safety": ("안전",), "land": ("토지", "땅", "대지"),
    "parking": ("주차",), "garden": ("텃밭",), "newcomer": ("귀농", "귀촌", "전입"), "farm": ("농",),
    "rural": ("농어촌", "농촌"), "percent": ("%",), "share": ("%", "비율"),
}  # fmt: skip

KO_EN: dict[str, tuple[str, ...]] = {}
for _en, _kos in EN_KO.items():
    for _ko in _kos:
        KO_EN.setdefault(_ko[:2], ())
        KO_EN[_ko[:2]] = (*KO_EN[_ko[:2]], _en)


def translate(topic: str) -> tuple[str, ...]:
    """The topic's words in the other language ((): not in the glossary)."""
    if "\uac00" <= topic[0] <= "\ud7a3":
        return KO_EN.get(topic[:2], ())
    for stem, kos in EN_KO.items():
        if topic[:5] == stem[:5] or topic.startswith(stem):
            return kos
    return ()
