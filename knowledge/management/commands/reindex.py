"""Rebuild the search index from the stored chunks and swap the alias (search keeps answering)."""

from __future__ import annotations

import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from knowledge.errors import KnowledgeError
from knowledge.search import get_search_backend
from knowledge.services import index_rebuild, index_reconcile


class Command(BaseCommand):
    help = (
        "Build a new versioned index from the chunks in the database (no re-embedding), then point the "
        "alias at it in one atomic step and delete the old index. --reconcile only repairs drift."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--backend", default=None, help="SEARCH_BACKENDS alias (default: SEARCH_BACKEND).")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument("--reconcile", action="store_true", help="Only fix documents missing or stale.")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, CI).")

    def handle(self, *args, backend: str | None, batch_size: int, reconcile: bool, no_progress: bool, **opts):
        search = get_search_backend(backend)
        try:
            if reconcile:
                fixed = index_reconcile(backend=search)
                self.stdout.write(self.style.SUCCESS(f"reconciled {fixed} document(s) in {search.alias}"))
                return
            bar = tqdm(unit="chunk", disable=no_progress, file=sys.stderr, desc=f"reindex {search.alias}")

            def on_start(total: int) -> None:
                bar.total = total
                bar.refresh()

            try:
                report = index_rebuild(backend=search, batch_size=batch_size, on_start=on_start, on_batch=bar.update)
            finally:
                bar.close()
        except KnowledgeError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"{search.alias} -> {report.index}: {report.chunks} chunks in {report.seconds:.1f}s; "
                f"replaced {', '.join(report.replaced) or 'nothing'}; reconciled {report.reconciled} document(s)"
            )
        )
