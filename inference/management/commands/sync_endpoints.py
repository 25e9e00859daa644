"""Create or update the model endpoints implied by the environment (VLLM_URL, TRITON_URL ...)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from inference.services import endpoints_sync_from_env


class Command(BaseCommand):
    help = "Create/update the endpoints implied by VLLM_URL / LOCAL_LLM_URL / TRITON_URL (idempotent)."

    def handle(self, *args, **options) -> None:
        report = endpoints_sync_from_env()
        for label, names in (
            ("created", report.created),
            ("updated", report.updated),
            ("unchanged", report.unchanged),
            ("removed", report.removed),
            ("skipped (admin-managed)", report.skipped),
        ):
            if names:
                self.stdout.write(f"{label}: {', '.join(names)}")
