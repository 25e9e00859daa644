"""``manage.py flush_usage``: move the usage counters from Redis into the ModelUsage rows now.

Server processes do this every GATEWAY_USAGE_FLUSH_S on their own; run this from cron (or a
Kubernetes CronJob) when that is 0, or before reading the usage page to see the last minute.
Safe to run anywhere, any number of times, concurrently: each batch is applied once.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from chat.gateway.usage import usage_flush


class Command(BaseCommand):
    help = "Flush the per-model usage counters (Redis) into PostgreSQL."

    def handle(self, *args: Any, **options: Any) -> None:
        report = usage_flush()
        self.stdout.write(f"flushed {report.batches} batch(es): {report.requests} request(s) into {report.rows} row(s)")
