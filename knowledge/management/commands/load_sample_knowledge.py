"""Create the public "빈집 정책" collection and ingest the sample documents (idempotent)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from knowledge.sample import load_sample_knowledge


class Command(BaseCommand):
    help = "Load knowledge/fixtures/sample into the public '빈집 정책' collection (running it again adds nothing)."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--wait",
            action="store_true",
            help="Run the ingestion jobs now in this process instead of leaving them to the worker.",
        )

    def handle(self, *args, wait: bool, **options) -> None:
        report = load_sample_knowledge(run_jobs=wait)
        for line in report.lines:
            self.stdout.write(line)
        self.stdout.write(
            self.style.SUCCESS(
                f"collection '{report.collection.name}': {report.created} new, {report.existing} already present"
            )
        )
