"""The project's own evaluation runs in the test command and holds retrieval and answers to the recorded floor.

The floor is ``evaluation/recorded.json`` (the figures docs/answer-quality.md shows):
a change that costs more than 5 points of hit@3 on any backend and stage, or of the
extractive answers' refusals of unanswerable questions, fails here.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from django.core.management import call_command

from evaluation import report
from knowledge.search import reset_backends

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "answer-quality.md"
TOLERANCE = 0.05


@pytest.fixture
def isolated_index(settings, tmp_path):
    """The corpora are ingested into an alias of their own (the suite's other indexes stay clean)."""
    alias = f"vh-test-eval-{uuid.uuid4().hex[:8]}"
    backends = {name: dict(config) for name, config in settings.SEARCH_BACKENDS.items()}
    for config in backends.values():
        config["INDEX"] = alias
    backends["elasticsearch"].update(SHARDS=1, REPLICAS=0, REFRESH="wait_for")
    settings.SEARCH_BACKENDS = backends
    settings.KNOWLEDGE_JOBS_INLINE = True
    settings.MEDIA_ROOT = str(tmp_path / "media")
    reset_backends()
    yield alias
    from knowledge.search import get_search_backend

    backend = get_search_backend()
    for name in backend.list_indexes():
        backend.delete_index(name)
    reset_backends()


def test_retrieval_and_extractive_answers_hold_the_recorded_figures(isolated_index, tmp_path):
    out = tmp_path / "evaluation.json"
    call_command(
        "evaluate",
        "--backends",
        "local,elasticsearch",
        "--answers",
        "extractive",
        "--stages",
        "lexical,dense,hybrid",
        "--json",
        str(out),
        "--alias-prefix",
        isolated_index,
    )
    measured = json.loads(out.read_text())
    recorded = report.load_recorded()
    assert recorded.get("retrieval"), "evaluation/recorded.json holds no figures: run `make evaluate RECORD=1`"
    by_key = {f"{r['backend']} {r['stage']}": r for r in measured["retrieval"] if r["available"]}
    drops = []
    for floor in recorded["retrieval"]:
        key = f"{floor['backend']} {floor['stage']}"
        if not floor["available"] or key not in by_key:
            continue  # a stage this machine cannot run (no reranker, no nori plugin)
        if by_key[key]["hit3"] < floor["hit3"] - TOLERANCE:
            drops.append(f"{key}: hit@3 {by_key[key]['hit3']:.3f} < recorded {floor['hit3']:.3f} - {TOLERANCE}")
    assert not drops, drops
    # Both backends ran, hybrid included.
    assert "local hybrid" in by_key and any(k.startswith("elasticsearch/") for k in by_key), sorted(by_key)

    extractive = next(a for a in measured["answers"] if a["mode"] == "extractive")
    floor = next(a for a in recorded["answers"] if a["mode"] == "extractive")
    assert extractive["refusal_rate"] >= floor["refusal_rate"] - TOLERANCE, extractive
    assert extractive["fact_rate"] >= floor["fact_rate"] - TOLERANCE, extractive


def test_the_docs_show_the_recorded_figures():
    """docs/answer-quality.md carries the recorded tables verbatim (`make evaluate RECORD=1` prints them)."""
    text = DOCS.read_text(encoding="utf-8")
    recorded = report.load_recorded()
    assert report.retrieval_table(recorded["retrieval"]) in text
    assert report.answers_table(recorded["answers"]) in text
