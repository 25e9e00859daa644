"""Check the retrieval/answer evaluation dataset (stdlib only).

Usage: python evaluation/dataset/check_dataset.py [--verbose]

Checks that
- both manifests parse, every listed file exists and every corpus file is listed;
- every line of questions.jsonl is a well-formed question (fields, id, lang, kind);
- every relevant document is listed in its collection's manifest;
- every fact occurs verbatim in the plain text (HTML tags / Markdown markup stripped)
  of at least one of the question's relevant documents;
- unanswerable questions have no relevant documents and no facts;
- the dataset keeps its designed properties (size, coverage of every document,
  share of English questions about Korean documents, cross-lingual questions, ...).

Exits 1 with one line per problem; prints the counts and exits 0 when all is well.
With --verbose it also lists facts that occur in documents outside the relevant set
(informational: such facts are weaker evidence that the right document was used).
"""

from __future__ import annotations

import html
import json
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
SAMPLE_DIR = HERE.parent.parent / "knowledge" / "fixtures" / "sample"
EVAL_DIR = HERE / "corpus"
QUESTIONS = HERE / "questions.jsonl"

SAMPLE_SLUG = "vacant-house-policy"
EVAL_SLUG = "eval-similar-programmes"
COLLECTION_DIRS = {SAMPLE_SLUG: SAMPLE_DIR, EVAL_SLUG: EVAL_DIR}

LANGS = {"ko", "en", "mixed"}
KINDS = {"numeric", "procedure", "date", "eligibility", "definition", "unanswerable"}
FIELDS = {"id", "question", "lang", "kind", "relevant", "facts"}
OPTIONAL_FIELDS = {"note"}
RETRIEVAL_ONLY = "retrieval-only"

MIN_QUESTIONS = 72
MIN_UNANSWERABLE = 10
MIN_PER_DOCUMENT = 2
MIN_EN_ON_KO_SHARE = 0.12
MIN_KO_ON_EN = 2
MIN_MIXED = 2
FACT_LEN = (2, 20)
# Each corpus should be the target of 35-65% of the answerable questions' relevant documents.
CORPUS_SHARE = (0.35, 0.65)


def plain_text(path: Path) -> str:
    """The document as a reader sees it: HTML tags and Markdown emphasis removed, spaces collapsed."""
    raw = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        raw = re.sub(r"(?is)<(script|style|title)\b[^>]*>.*?</\1\s*>", " ", raw)
        raw = re.sub(r"(?s)<!--.*?-->", " ", raw)
        raw = re.sub(r"(?s)<[^>]+>", " ", raw)
        raw = html.unescape(raw)
    elif suffix in (".md", ".markdown"):
        raw = re.sub(r"!\[([^\]]*)\]\([^)]*\)", r"\1", raw)
        raw = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", raw)
        raw = re.sub(r"(?m)^\s{0,3}#{1,6}\s+", "", raw)
        raw = re.sub(r"(?m)^\s{0,3}>\s?", "", raw)
        raw = re.sub(r"(\*\*|__|`)", "", raw)
        raw = re.sub(r"(?<![\w*])\*(?=\S)|(?<=\S)\*(?![\w*])", "", raw)
        raw = raw.replace("|", " ")
    return normalize(raw)


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def has_hangul(text: str) -> bool:
    return any("\uac00" <= ch <= "\ud7a3" for ch in text)


def load_manifests(problems: list[str]) -> dict[str, dict[str, dict]]:
    """slug -> {file: manifest entry (with 'text' added)}."""
    collections: dict[str, dict[str, dict]] = {}
    for slug, folder in COLLECTION_DIRS.items():
        manifest_path = folder / "manifest.json"
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            problems.append(f"{manifest_path}: cannot read manifest ({exc})")
            continue
        spec = manifest.get("collection", {})
        if spec.get("slug") != slug:
            problems.append(f"{manifest_path}: collection slug is {spec.get('slug')!r}, expected {slug!r}")
        for key in ("name", "description"):
            if not spec.get(key):
                problems.append(f"{manifest_path}: collection.{key} is missing")
        if spec.get("is_public") is not True:
            problems.append(f"{manifest_path}: collection.is_public must be true")
        docs: dict[str, dict] = {}
        for item in manifest.get("documents", []):
            name = item.get("file", "")
            if name in docs:
                problems.append(f"{manifest_path}: {name!r} listed twice")
            for key in ("file", "title", "source", "category", "timestamp"):
                if not item.get(key):
                    problems.append(f"{manifest_path}: document {name!r} has no {key!r}")
            path = folder / name
            if not path.is_file():
                problems.append(f"{manifest_path}: listed file {name!r} does not exist")
                continue
            entry = dict(item)
            entry["text"] = plain_text(path)
            entry["english"] = item.get("language") == "en"
            if entry["english"] == has_hangul(entry["text"][:400]):
                problems.append(f"{manifest_path}: {name!r} language field does not match its text")
            docs[name] = entry
        on_disk = {p.name for p in folder.iterdir() if p.is_file() and p.name != "manifest.json"}
        for extra in sorted(on_disk - set(docs)):
            problems.append(f"{folder}: {extra!r} is not listed in manifest.json")
        collections[slug] = docs
    return collections


def check_question(obj: object, line_no: int, collections, problems: list[str]) -> dict | None:
    where = f"questions.jsonl line {line_no}"
    if not isinstance(obj, dict):
        problems.append(f"{where}: not a JSON object")
        return None
    qid = obj.get("id", "?")
    where = f"{where} ({qid})"
    missing = FIELDS - obj.keys()
    unknown = obj.keys() - FIELDS - OPTIONAL_FIELDS
    if missing:
        problems.append(f"{where}: missing field(s) {sorted(missing)}")
        return None
    if unknown:
        problems.append(f"{where}: unknown field(s) {sorted(unknown)}")
    if not re.fullmatch(r"q\d{3}", str(qid)):
        problems.append(f"{where}: id must look like q001")
    if not isinstance(obj["question"], str) or len(obj["question"].strip()) < 5:
        problems.append(f"{where}: question text is missing or too short")
    if obj["lang"] not in LANGS:
        problems.append(f"{where}: lang {obj['lang']!r} not in {sorted(LANGS)}")
    if obj["kind"] not in KINDS:
        problems.append(f"{where}: kind {obj['kind']!r} not in {sorted(KINDS)}")
    question = obj.get("question", "")
    if obj["lang"] == "en" and has_hangul(question):
        problems.append(f"{where}: lang is 'en' but the question contains Hangul")
    if obj["lang"] == "ko" and re.search(r"[A-Za-z]{3,}", question):
        problems.append(f"{where}: lang is 'ko' but the question contains English words (use 'mixed')")
    if obj["lang"] == "mixed" and not (has_hangul(question) and re.search(r"[A-Za-z]{3,}", question)):
        problems.append(f"{where}: lang is 'mixed' but the question is not Korean and English")

    relevant, facts = obj["relevant"], obj["facts"]
    if not isinstance(relevant, list) or not isinstance(facts, list):
        problems.append(f"{where}: relevant and facts must be lists")
        return None
    docs = []
    for ref in relevant:
        if not isinstance(ref, dict) or set(ref) != {"collection", "file"}:
            problems.append(f"{where}: relevant entries must be {{'collection', 'file'}} objects, got {ref!r}")
            continue
        coll = collections.get(ref["collection"])
        if coll is None:
            problems.append(f"{where}: unknown collection {ref['collection']!r}")
            continue
        if ref["file"] not in coll:
            problems.append(f"{where}: {ref['file']!r} is not in the manifest of {ref['collection']!r}")
            continue
        docs.append((ref["collection"], ref["file"]))
    if len(set(docs)) != len(docs):
        problems.append(f"{where}: a relevant document is listed twice")

    note = obj.get("note", "")
    if obj["kind"] == "unanswerable":
        if relevant or facts:
            problems.append(f"{where}: unanswerable questions need empty relevant and facts")
    else:
        if not relevant:
            problems.append(f"{where}: answerable question without relevant documents")
        if not facts and RETRIEVAL_ONLY not in note:
            problems.append(f"{where}: answerable question without facts (mark it '{RETRIEVAL_ONLY}' in note)")
    for fact in facts:
        if not isinstance(fact, str) or not (FACT_LEN[0] <= len(fact) <= FACT_LEN[1]):
            problems.append(f"{where}: fact {fact!r} must be a string of {FACT_LEN[0]}-{FACT_LEN[1]} characters")
            continue
        if fact != normalize(fact):
            problems.append(f"{where}: fact {fact!r} has stray whitespace")
        if docs and not any(fact in collections[c][f]["text"] for c, f in docs):
            problems.append(f"{where}: fact {fact!r} does not occur in any relevant document")
    obj["_docs"] = docs
    return obj


def main(argv: list[str]) -> int:
    verbose = "--verbose" in argv
    problems: list[str] = []
    collections = load_manifests(problems)
    if problems:
        print("\n".join(f"PROBLEM: {p}" for p in problems))
        return 1

    questions: list[dict] = []
    seen_ids: set[str] = set()
    seen_texts: set[str] = set()
    for line_no, line in enumerate(QUESTIONS.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            problems.append(f"questions.jsonl line {line_no}: empty line")
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            problems.append(f"questions.jsonl line {line_no}: invalid JSON ({exc})")
            continue
        checked = check_question(obj, line_no, collections, problems)
        if checked is None:
            continue
        if checked["id"] in seen_ids:
            problems.append(f"questions.jsonl line {line_no}: duplicate id {checked['id']}")
        if checked["id"] != f"q{len(questions) + 1:03d}":
            problems.append(f"questions.jsonl line {line_no}: id {checked['id']} out of sequence")
        if normalize(checked["question"]) in seen_texts:
            problems.append(f"questions.jsonl line {line_no}: duplicate question text")
        seen_ids.add(checked["id"])
        seen_texts.add(normalize(checked["question"]))
        questions.append(checked)

    # Designed properties of the whole set.
    answerable = [q for q in questions if q["kind"] != "unanswerable"]
    per_doc = Counter(d for q in questions for d in q["_docs"])
    for slug, docs in collections.items():
        for name in docs:
            if per_doc[(slug, name)] < MIN_PER_DOCUMENT:
                problems.append(
                    f"coverage: {slug}/{name} is relevant to {per_doc[(slug, name)]} question(s), "
                    f"needs {MIN_PER_DOCUMENT}"
                )
    if len(questions) < MIN_QUESTIONS:
        problems.append(f"size: {len(questions)} questions, needs at least {MIN_QUESTIONS}")
    unanswerable = len(questions) - len(answerable)
    if unanswerable < MIN_UNANSWERABLE:
        problems.append(f"size: {unanswerable} unanswerable questions, needs at least {MIN_UNANSWERABLE}")

    def is_english(doc: tuple[str, str]) -> bool:
        return collections[doc[0]][doc[1]]["english"]

    en_on_ko = [q for q in answerable if q["lang"] == "en" and q["_docs"] and not any(map(is_english, q["_docs"]))]
    ko_on_en = [q for q in answerable if q["lang"] == "ko" and q["_docs"] and all(map(is_english, q["_docs"]))]
    mixed = [q for q in questions if q["lang"] == "mixed"]
    if questions and len(en_on_ko) / len(questions) < MIN_EN_ON_KO_SHARE:
        problems.append(
            f"languages: {len(en_on_ko)} English questions about Korean documents "
            f"({len(en_on_ko) / len(questions):.0%}), needs {MIN_EN_ON_KO_SHARE:.0%}"
        )
    if len(ko_on_en) < MIN_KO_ON_EN:
        problems.append(f"languages: {len(ko_on_en)} Korean questions about English documents, needs {MIN_KO_ON_EN}")
    if len(mixed) < MIN_MIXED:
        problems.append(f"languages: {len(mixed)} mixed Korean/English questions, needs {MIN_MIXED}")

    corpus_refs = Counter(slug for q in answerable for slug, _ in q["_docs"])
    total_refs = sum(corpus_refs.values())
    for slug in collections:
        share = corpus_refs[slug] / total_refs if total_refs else 0.0
        if not CORPUS_SHARE[0] <= share <= CORPUS_SHARE[1]:
            problems.append(f"balance: {slug} holds {share:.0%} of the relevant documents, expected 35-65%")

    if problems:
        print("\n".join(f"PROBLEM: {p}" for p in problems))
        print(f"{len(problems)} problem(s) found.")
        return 1

    # Report.
    only = Counter()
    for q in answerable:
        slugs = {slug for slug, _ in q["_docs"]}
        only["both corpora" if len(slugs) > 1 else next(iter(slugs))] += 1
    print(f"OK: {len(questions)} questions, {sum(len(d) for d in collections.values())} documents in 2 collections")
    print("by kind:      " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(q["kind"] for q in questions).items())))
    print("by language:  " + ", ".join(f"{k} {v}" for k, v in sorted(Counter(q["lang"] for q in questions).items())))
    print(
        f"cross-lingual: {len(en_on_ko)} English questions about Korean documents "
        f"({len(en_on_ko) / len(questions):.0%}), {len(ko_on_en)} Korean questions about English documents"
    )
    print(
        "by corpus (answerable questions): "
        + ", ".join(f"{k} {v}" for k, v in sorted(only.items()))
        + f"; unanswerable {unanswerable}"
    )
    print("relevant-document references: " + ", ".join(f"{k} {v}" for k, v in sorted(corpus_refs.items())))
    print(f"multi-document questions: {sum(1 for q in answerable if len(q['_docs']) > 1)}")
    print(f"retrieval-only questions (no facts): {sum(1 for q in answerable if not q['facts'])}")
    print(f"questions per document: min {min(per_doc.values())}, max {max(per_doc.values())}")

    # Informational: facts that also occur in documents outside the relevant set.
    shared = []
    all_docs = [(slug, name) for slug, docs in collections.items() for name in docs]
    for q in answerable:
        for fact in q["facts"]:
            others = [d for d in all_docs if d not in q["_docs"] and fact in collections[d[0]][d[1]]["text"]]
            if others:
                shared.append((q["id"], fact, others))
    print(f"info: {len(shared)} fact(s) also occur in a non-relevant document (run with --verbose to list)")
    if verbose:
        for qid, fact, others in shared:
            print(f"  {qid} {fact!r}: also in " + ", ".join(name for _, name in others))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
