"""Run background knowledge jobs (ingestion, re-indexing, index deletions) from the job table."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from knowledge import jobs


class Command(BaseCommand):
    help = "Run knowledge ingestion jobs. Polls the job table until stopped (SIGTERM/SIGINT finish the job first)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="Run at most one job, then exit.")
        parser.add_argument("--burst", action="store_true", help="Run until no job is runnable, then exit.")
        parser.add_argument("--sleep", type=float, default=1.0, help="Seconds between polls of an empty queue.")
        parser.add_argument("--worker-id", default=None, help="Name recorded on claimed jobs (default host:pid).")

    def handle(self, *args, once: bool, burst: bool, sleep: float, worker_id: str | None, **options) -> None:
        stopping = False

        def stop(signum, frame) -> None:
            nonlocal stopping
            stopping = True
            self.stdout.write("stopping after the current job")

        if not (once or burst):
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
        ran = jobs.work(
            worker_id=worker_id,
            once=once,
            burst=burst,
            poll_interval=sleep,
            should_stop=lambda: stopping,
            log=lambda line: self.stdout.write(line),
        )
        self.stdout.write(self.style.SUCCESS(f"ran {ran} job(s)"))
