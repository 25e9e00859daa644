"""``manage.py evaluate``: score retrieval (and answers) on the project's own Korean dataset.

Loads the sample knowledge and the evaluation corpus through ingestion into the configured
database (run it on a scratch database: ``make evaluate`` does), then prints one table row per
backend and stage. See docs/answer-quality.md for the method and the recorded figures.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from evaluation import report
from evaluation.answers import evaluate_answers, evaluate_gate
from evaluation.retrieval import evaluate_retrieval, load_corpora


class Command(BaseCommand):
    help = "Evaluate retrieval (hit@k, MRR, nDCG@5, latency) and answers on the project's Korean dataset."

    def add_arguments(self, parser: CommandParser) -> None:
        default = "local,elasticsearch" if settings.SEARCH_BACKENDS["elasticsearch"]["URLS"] else "local"
        parser.add_argument("--backends", default=default, help=f"comma-separated: local, elasticsearch ({default})")
        parser.add_argument(
            "--answers",
            default="extractive",
            help="comma-separated answer modes to score through the chat pipeline: extractive, generative, "
            "generative_fallback (generative needs a model endpoint); 'none' skips answers (extractive)",
        )
        parser.add_argument("--json", dest="json_path", help="also write the results as JSON to this file")
        parser.add_argument(
            "--stages",
            default="lexical,dense,hybrid,hybrid+rerank",
            help="comma-separated retrieval stages; hybrid+rerank runs only where a reranker is configured",
        )
        parser.add_argument(
            "--alias-prefix", default="vh-eval", help="index aliases of the backends under test: <prefix>-local, ..."
        )
        parser.add_argument(
            "--record", action="store_true", help="store these figures in evaluation/recorded.json (the test's floor)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        corpus = load_corpora()
        self.stdout.write(f"corpus: {len(corpus.doc_ids)} documents in {len(corpus.collection_ids)} collections")
        backends = [b.strip() for b in options["backends"].split(",") if b.strip()]
        stages = [s.strip() for s in options["stages"].split(",") if s.strip()]
        results = evaluate_retrieval(backends, corpus=corpus, alias_prefix=options["alias_prefix"], stages=stages)
        self.stdout.write("\nRetrieval (answerable questions; relevant = the question's documents)\n")
        self.stdout.write(report.retrieval_table(results))
        misses = {f"{r.backend} {r.stage}": r.misses for r in results if r.available and r.misses}
        if misses:
            self.stdout.write("\nMissed at 3: " + json.dumps(misses, ensure_ascii=False))
        answers = []
        for mode in [m.strip() for m in options["answers"].split(",") if m.strip() and m.strip() != "none"]:
            answers.append(evaluate_answers(corpus, mode=mode))
        if answers:
            self.stdout.write("\nAnswers (through the chat pipeline; configured search backend)\n")
            self.stdout.write(report.answers_table(answers))
        gate = evaluate_gate(corpus)
        self.stdout.write("\nThe not-found gate before a generated answer (no model call)\n")
        self.stdout.write(report.gate_table(gate))
        data = {
            "retrieval": [r.as_dict() for r in results],
            "answers": [a.as_dict() for a in answers],
            "gate": gate.as_dict(),
        }
        if options["json_path"]:
            with open(options["json_path"], "w", encoding="utf-8") as fh:
                json.dump(data, fh, ensure_ascii=False, indent=2)
        if options["record"]:
            # The floor the test command holds the code to, and the tables docs/answer-quality.md shows.
            report.save_recorded(data)
            self.stdout.write(f"\nrecorded in {report.RECORDED}")
