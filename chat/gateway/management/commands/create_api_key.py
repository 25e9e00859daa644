"""``manage.py create_api_key --user alice --scopes chat,knowledge:read [--expires 2027-01-01|30d] [--models a,b]``.

Prints the key once: only its hash is stored.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from chat.gateway.models import API_KEY_SCOPES, RateLimitPolicy
from chat.gateway.services import apikey_create


def parse_expiry(value: str) -> datetime:
    """An ISO date/datetime (local time zone when naive) or a duration: 30d, 12h, 90m."""
    if m := re.fullmatch(r"(\d+)([dhm])", value.strip()):
        n, unit = int(m.group(1)), m.group(2)
        units = {"d": "days", "h": "hours", "m": "minutes"}
        return timezone.now() + timedelta(**{units[unit]: n})
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CommandError(f"--expires {value!r}: use an ISO date (2027-01-31) or a duration (30d, 12h).") from None
    if timezone.is_naive(when):
        when = timezone.make_aware(when)
    if when <= timezone.now():
        raise CommandError("--expires is in the past.")
    return when


class Command(BaseCommand):
    help = "Create an API key for a user and print it (once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--user", required=True, help="Username (or numeric id) the key acts as.")
        parser.add_argument("--scopes", required=True, help=f"Comma-separated: {', '.join(API_KEY_SCOPES)}.")
        parser.add_argument("--name", default="", help="A label for operators (default: cli-<username>).")
        parser.add_argument("--expires", help="ISO date/datetime or a duration such as 30d or 12h.")
        parser.add_argument("--policy", help="Name of a per-API-key rate-limit policy (default: the scope default).")
        parser.add_argument("--models", help="Comma-separated model names the key may use (default: all its owner's).")

    def handle(self, *args: Any, **opts: Any) -> None:
        User = get_user_model()
        who = opts["user"]
        try:
            user = User.objects.get(pk=int(who)) if who.isdigit() else User.objects.get(**{User.USERNAME_FIELD: who})
        except User.DoesNotExist:
            raise CommandError(f"No user {who!r}.") from None
        scopes = [s.strip() for s in opts["scopes"].split(",") if s.strip()]
        unknown = [s for s in scopes if s not in API_KEY_SCOPES]
        if unknown or not scopes:
            raise CommandError(f"Unknown scope(s) {unknown or scopes}; choose from {', '.join(API_KEY_SCOPES)}.")
        policy = None
        if opts["policy"]:
            try:
                policy = RateLimitPolicy.objects.get(name=opts["policy"], scope=RateLimitPolicy.Scope.API_KEY)
            except RateLimitPolicy.DoesNotExist:
                raise CommandError(f"No per-API-key policy named {opts['policy']!r}.") from None
        expires = parse_expiry(opts["expires"]) if opts["expires"] else None
        models: list[int] = []
        if opts["models"]:
            from inference.models import ModelGroup

            names = [n.strip() for n in opts["models"].split(",") if n.strip()]
            found = dict(ModelGroup.objects.filter(name__in=names).values_list("name", "pk"))
            if missing := [n for n in names if n not in found]:
                raise CommandError(f"No model group named {', '.join(missing)}.")
            models = [found[n] for n in names]
        created = apikey_create(
            name=opts["name"] or f"cli-{user.get_username()}",
            user=user,
            scopes=scopes,
            policy=policy,
            expires_at=expires,
            allowed_models=models,
        )
        self.stderr.write(
            f"Created API key {created.api_key.prefix}… for {user.get_username()} "
            f"(scopes: {', '.join(created.api_key.scopes)}; expires: {expires or 'never'}). "
            "Store it now: it is not shown again."
        )
        self.stdout.write(created.full_key)
