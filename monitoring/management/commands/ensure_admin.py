"""Create the local admin account once and print its login (used by `make run`).

Idempotent: a second run creates nothing and prints the same login. The
generated password is kept in DATA_DIR/admin-login (mode 0600) so the run
command can show it again; production creates admins with createsuperuser.
"""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the local admin user if missing and print its login."

    def add_arguments(self, parser) -> None:  # type: ignore[no-untyped-def]
        parser.add_argument("--username", default=os.environ.get("ADMIN_USERNAME", "admin"))

    def handle(self, *args: object, username: str, **options: object) -> None:
        secret_file = settings.DATA_DIR / "admin-login"
        user_model = get_user_model()
        user = user_model.objects.filter(username=username).first()
        if user is None:
            password = os.environ.get("ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            user_model.objects.create_superuser(username=username, email="", password=password)
            secret_file.write_text(f"{username}\n{password}\n")
            secret_file.chmod(0o600)
            created = True
        else:
            created = False
            lines = secret_file.read_text().split() if secret_file.exists() else []
            password = lines[1] if len(lines) == 2 and lines[0] == username else None
        state = "created" if created else "exists"
        if password and (created or user.check_password(password)):
            self.stdout.write(f"admin login ({state}): username={username} password={password}")
        else:
            self.stdout.write(
                f"admin login ({state}): username={username}, password unchanged "
                f"(reset it with: manage.py changepassword {username})"
            )
