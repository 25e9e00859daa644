"""``manage.py rotate_endpoint_keys``: re-encrypt stored endpoint API keys under the first key.

Rotation: put the new key first in INFERENCE_ENCRYPTION_KEYS (keep the old one after it),
deploy, run this, then drop the old key. Also encrypts any key still stored in clear.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.db import connection, transaction

from inference import secrets
from inference.models import ModelEndpoint


class Command(BaseCommand):
    help = "Re-encrypt the model endpoints' API keys with the first INFERENCE_ENCRYPTION_KEYS key."

    def handle(self, *args: Any, **options: Any) -> None:
        table = ModelEndpoint._meta.db_table
        changed = 0
        with transaction.atomic(), connection.cursor() as cursor:
            # The raw column: the model field would hand back plaintext.
            cursor.execute(f"SELECT id, api_key FROM {table} WHERE api_key <> ''")
            for pk, stored in cursor.fetchall():
                rotated = secrets.rotate(stored)
                if rotated != stored:
                    ModelEndpoint.objects.filter(pk=pk).update(api_key=rotated)
                    changed += 1
        self.stdout.write(f"re-encrypted {changed} endpoint key(s)")
