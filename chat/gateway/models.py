"""Gateway controls' tables: rate-limit policies and API keys.

Live counters (windows, concurrency slots, cache entries) live in Redis, never here:
these tables hold configuration, read by the hot path through a short per-process cache.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from knowledge.permissions import SCOPE_READ as SCOPE_KNOWLEDGE_READ
from knowledge.permissions import SCOPE_WRITE as SCOPE_KNOWLEDGE_WRITE

SCOPE_CHAT = "chat"
# Operators' conversation exports (chat/exports.py); the key's owner must be staff as well.
SCOPE_EXPORT = "export"
API_KEY_SCOPES = (SCOPE_CHAT, SCOPE_KNOWLEDGE_READ, SCOPE_KNOWLEDGE_WRITE, SCOPE_EXPORT)


class RateLimitPolicy(models.Model):
    """How much one subject may ask: requests per window, tokens per minute, parallel requests.

    One policy per scope is the default (``is_default``); an API key may name its own.
    Zero means "no limit" for the token and concurrency budgets.
    """

    class Scope(models.TextChoices):
        GLOBAL = "global", _("Global (all requests together)")
        USER = "user", _("Per user (browser session)")
        API_KEY = "api_key", _("Per API key")
        IP = "ip", _("Per IP address (anonymous requests)")
        ANONYMOUS = "anonymous", _("Per anonymous session")

    name = models.CharField(max_length=100, unique=True)
    scope = models.CharField(max_length=20, choices=Scope.choices)
    is_default = models.BooleanField(
        default=False, help_text=_("Applies to every subject of this scope that has no policy of its own.")
    )
    requests = models.PositiveIntegerField(help_text=_("Requests allowed per window (0: unlimited)."))
    window_seconds = models.PositiveIntegerField(default=60)
    tokens_per_minute = models.PositiveIntegerField(
        default=0, help_text=_("Prompt + completion tokens per sliding minute (0: unlimited).")
    )
    concurrent_requests = models.PositiveIntegerField(
        default=0, help_text=_("Requests in flight at once (0: unlimited).")
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("rate-limit policy")
        verbose_name_plural = _("rate-limit policies")
        ordering = ["scope", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope"], condition=Q(is_default=True), name="gateway_one_default_policy_per_scope"
            ),
            models.CheckConstraint(condition=Q(window_seconds__gte=1), name="gateway_policy_window_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_scope_display()})"

    def clean(self) -> None:
        if self.window_seconds > 86400:
            raise ValidationError({"window_seconds": _("At most one day (86400 s).")})


class APIKey(models.Model):
    """A bearer key for integrators. Requests made with it act as ``user``.

    Only a SHA-256 of the secret is stored: the secret is 256 random bits, so unlike a
    password it cannot be guessed from a dictionary and a slow KDF would only add latency
    to every request (see docs/gateway.md). The prefix is stored in clear to find the row
    and to show operators which key is which.
    """

    name = models.CharField(max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list, help_text=_("Any of: chat, knowledge:read, knowledge:write, export."))
    policy = models.ForeignKey(
        RateLimitPolicy,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        limit_choices_to={"scope": RateLimitPolicy.Scope.API_KEY},
        help_text=_("Empty: the default per-API-key policy."),
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    def clean(self) -> None:
        bad = [s for s in self.scopes or [] if s not in API_KEY_SCOPES]
        if not isinstance(self.scopes, list) or bad:
            raise ValidationError({"scopes": _("Unknown scope(s): %(s)s.") % {"s": ", ".join(map(str, bad))}})


class RateLimitUsage(models.Model):
    """No table: the admin entry for the live rate-limit usage page (counters live in Redis)."""

    class Meta:
        managed = False
        verbose_name = _("rate-limit usage")
        verbose_name_plural = _("rate-limit usage")
        default_permissions = ("view", "change")

    def __str__(self) -> str:
        return str(self._meta.verbose_name)


class ResponseCache(models.Model):
    """No table: the admin entry for the response-cache page (entries live in Redis)."""

    class Meta:
        managed = False
        verbose_name = _("response cache")
        verbose_name_plural = _("response cache")
        default_permissions = ("view", "change")

    def __str__(self) -> str:
        return str(self._meta.verbose_name)
