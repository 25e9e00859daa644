"""Probe model endpoints now and store the result (status, latency, last error)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from inference import selectors
from inference.services import endpoints_check


class Command(BaseCommand):
    help = "Probe endpoints (GET /v1/models; Triton server + model ready) and record their health."

    def add_arguments(self, parser) -> None:
        parser.add_argument("names", nargs="*", help="Endpoint names (default: every enabled endpoint).")
        parser.add_argument("--kind", choices=["generation", "embedding", "reranker"])
        parser.add_argument("--all", action="store_true", help="Include disabled endpoints.")
        parser.add_argument("--timeout", type=float, default=10.0, help="Seconds per probe (default 10).")

    def handle(self, *args, names: list[str], kind: str | None, all: bool, timeout: float, **options) -> None:
        endpoints = selectors.endpoint_list(enabled=None if all or names else True, kind=kind)
        if names:
            endpoints = endpoints.filter(name__in=names)
            missing = set(names) - set(endpoints.values_list("name", flat=True))
            if missing:
                raise CommandError(f"unknown endpoint(s): {', '.join(sorted(missing))}")
        results = endpoints_check(endpoints, timeout=timeout)
        if not results:
            self.stdout.write("no endpoint to check")
            return
        for r in results:
            status = self.style.SUCCESS("up  ") if r.ok else self.style.ERROR("down")
            self.stdout.write(f"{status} {r.name:<24} {r.latency_ms:>8.1f} ms  {r.detail}")
        down = [r.name for r in results if not r.ok]
        if down:
            raise CommandError(f"{len(down)} endpoint(s) down: {', '.join(down)}")
