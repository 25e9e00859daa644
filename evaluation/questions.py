"""The evaluation dataset: questions (``dataset/questions.jsonl``) over two manifest corpora."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from knowledge.sample import SAMPLE_DIR

DATASET_DIR = Path(__file__).resolve().parent / "dataset"
CORPUS_DIRS: tuple[Path, ...] = (SAMPLE_DIR, DATASET_DIR / "corpus")


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    text: str
    lang: str  # ko | en | mixed
    kind: str  # numeric | procedure | date | eligibility | definition | unanswerable
    relevant: tuple[tuple[str, str], ...]  # (collection slug, file name)
    facts: tuple[str, ...]
    note: str = ""

    @property
    def answerable(self) -> bool:
        return bool(self.relevant)

    @property
    def off_topic(self) -> bool:
        """Unanswerable because nothing in either corpus is about it (not a near miss)."""
        return self.note.startswith("off-topic")

    @property
    def cross_lingual(self) -> bool:
        """Asked in English about Korean documents, or the reverse (the dataset's ``lang`` vs the files)."""
        english_files = {"07_english_overview.md"} | {f for _, f in self.relevant if f.endswith("_en.md")}
        files = {f for _, f in self.relevant}
        if not files:
            return False
        if self.lang == "en":
            return not files <= english_files
        return self.lang == "ko" and files <= english_files


@cache
def questions() -> tuple[Question, ...]:
    out = []
    for line in (DATASET_DIR / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        out.append(
            Question(
                id=row["id"],
                text=row["question"],
                lang=row["lang"],
                kind=row["kind"],
                relevant=tuple((r["collection"], r["file"]) for r in row["relevant"]),
                facts=tuple(row["facts"]),
                note=row.get("note", ""),
            )
        )
    return tuple(out)
