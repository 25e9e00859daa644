"""The evaluation's tables, and the recorded figures the test command holds the code to."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

RECORDED = Path(__file__).resolve().parent / "recorded.json"


def _rows(results: Iterable[Any]) -> list[Any]:
    """Result objects, or their recorded dicts, alike."""
    return [SimpleNamespace(**r) if isinstance(r, dict) else r for r in results]


def retrieval_table(results: Iterable[Any]) -> str:
    rows = [
        "| backend | stage | hit@1 | hit@3 | MRR | nDCG@5 | cross-lingual hit@3 | p50 ms | p95 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in _rows(results):
        if not r.available:
            rows.append(f"| {r.backend} | {r.stage} | n/a: no reranker | | | | | | |")
            continue
        rows.append(
            f"| {r.backend} | {r.stage} | {r.hit1:.1%} | {r.hit3:.1%} | {r.mrr:.3f} | {r.ndcg5:.3f} "
            f"| {r.cross_lingual_hit3:.1%} | {r.p50_ms:.1f} | {r.p95_ms:.1f} |"
        )
    return "\n".join(rows)


def answers_table(results: Iterable[Any]) -> str:
    rows = [
        "| mode | answered (of answerable) | all facts in answer | cited source holds the facts "
        "| unanswerable refused | p50 ms | p95 ms | answers by maker |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in _rows(results):
        n = a.answerable or 1
        rows.append(
            f"| {a.mode} | {a.answered}/{a.answerable} ({a.answered / n:.0%}) | {a.facts_all}/{a.answerable} "
            f"({a.facts_all / n:.0%}) | {a.cited_fact}/{a.answerable} ({a.cited_fact / n:.0%}) "
            f"| {a.refused}/{a.unanswerable} ({a.refused / max(a.unanswerable, 1):.0%}) | {a.p50_ms:.0f} | {a.p95_ms:.0f} "
            f"| {', '.join(f'{k} {v}' for k, v in sorted(a.by_model.items()))} |"
        )
    return "\n".join(rows)


def gate_table(gate: Any) -> str:
    g = SimpleNamespace(**gate) if isinstance(gate, dict) else gate
    return "\n".join(
        [
            "| questions | refused by the gate |",
            "|---|---|",
            f"| answerable | {g.answerable_refused}/{g.answerable} |",
            f"| unanswerable, near misses | {g.unanswerable_refused}/{g.unanswerable} |",
            f"| unanswerable, off-topic | {g.off_topic_refused}/{g.off_topic} |",
        ]
    )


def load_recorded() -> dict[str, Any]:
    return json.loads(RECORDED.read_text(encoding="utf-8")) if RECORDED.exists() else {}


def save_recorded(data: dict[str, Any]) -> None:
    RECORDED.write_text(json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True) + "\n", encoding="utf-8")
