"""Gateway controls' tables: rate-limit policies, API keys, model access, token budgets, usage.

Live counters (windows, concurrency slots, budgets spent, cache entries) live in Redis,
never here: these tables hold configuration, read by the hot path through a short
per-process cache, and the usage aggregates, written in batches (chat/gateway/usage.py),
never per request.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.models import Group
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
    model_group = models.ForeignKey(
        "inference.ModelGroup",
        verbose_name=_("model"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="rate_limit_policies",
        help_text=_(
            "Only requests for this model, counted apart from the scope's other limits (blank: every request). "
            "A model's policy is the default of its scope for that model."
        ),
    )
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("rate-limit policy")
        verbose_name_plural = _("rate-limit policies")
        ordering = ["scope", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["scope"],
                condition=Q(is_default=True, model_group__isnull=True),
                name="gateway_one_default_policy_per_scope",
            ),
            models.UniqueConstraint(
                fields=["scope", "model_group"],
                condition=Q(is_default=True, model_group__isnull=False),
                name="gateway_one_default_policy_per_scope_model",
            ),
            models.CheckConstraint(condition=Q(window_seconds__gte=1), name="gateway_policy_window_positive"),
        ]

    def __str__(self) -> str:
        model = f", {self.model_group}" if self.model_group_id else ""
        return f"{self.name} ({self.get_scope_display()}{model})"

    def clean(self) -> None:
        if self.window_seconds > 86400:
            raise ValidationError({"window_seconds": _("At most one day (86400 s).")})
        if self.model_group_id and not self.is_default:
            raise ValidationError({"is_default": _("A model's policy applies as its scope's default: tick it.")})


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
    allowed_models = models.JSONField(
        _("allowed models"),
        default=list,
        blank=True,
        help_text=_("Model groups (ids) this key may use, within its owner's; empty: all of the owner's."),
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


class ModelAccess(models.Model):
    """Which models a user, or each member of a group of users, may use.

    A user's allowed models are the union of the non-empty lists on the user and on their
    groups; when none states a list, every model. An API key narrows its owner's set with
    its own ``allowed_models``. Stored as model-group ids: a renamed group stays allowed,
    a deleted one stays refused (a list never widens to "all" by itself).
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="model_access"
    )
    group = models.OneToOneField(Group, null=True, blank=True, on_delete=models.CASCADE, related_name="model_access")
    allowed_models = models.JSONField(_("allowed models"), default=list, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("model access")
        verbose_name_plural = _("model access")
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False, group__isnull=True) | Q(user__isnull=True, group__isnull=False),
                name="gateway_model_access_user_xor_group",
            )
        ]

    def __str__(self) -> str:
        return f"{self.user or self.group}"


class TokenBudget(models.Model):
    """Prompt + completion tokens a subject may use per calendar month (TIME_ZONE), optionally per model.

    With neither ``api_key`` nor ``user``: the default of its scope (every key, every user).
    A request is checked against its subject's all-models budget and, when set, the one
    for the model it asks for (the subject's own rows first, else the scope's defaults).
    API-key requests are charged to the key, browser and REST sessions to the user.
    """

    class Scope(models.TextChoices):
        API_KEY = "api_key", _("Per API key")
        USER = "user", _("Per user")

    scope = models.CharField(_("scope"), max_length=16, choices=Scope.choices)
    api_key = models.ForeignKey(
        APIKey, verbose_name=_("API key"), null=True, blank=True, on_delete=models.CASCADE, related_name="budgets"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("user"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="token_budgets",
    )
    model_group = models.ForeignKey(
        "inference.ModelGroup",
        verbose_name=_("model"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="token_budgets",
        help_text=_("Blank: all models together."),
    )
    tokens_per_month = models.PositiveBigIntegerField(_("tokens per month"))
    enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("token budget")
        verbose_name_plural = _("token budgets")
        # NULLs are distinct in unique constraints: one constraint per shape of row.
        constraints = [
            models.UniqueConstraint(
                fields=["api_key", "model_group"],
                condition=Q(api_key__isnull=False, model_group__isnull=False),
                name="gateway_budget_one_per_key_model",
            ),
            models.UniqueConstraint(
                fields=["user", "model_group"],
                condition=Q(user__isnull=False, model_group__isnull=False),
                name="gateway_budget_one_per_user_model",
            ),
            models.UniqueConstraint(
                fields=["scope"],
                condition=Q(api_key__isnull=True, user__isnull=True, model_group__isnull=True),
                name="gateway_budget_one_default_per_scope",
            ),
            models.UniqueConstraint(
                fields=["scope", "model_group"],
                condition=Q(api_key__isnull=True, user__isnull=True, model_group__isnull=False),
                name="gateway_budget_one_default_per_scope_model",
            ),
            models.UniqueConstraint(
                fields=["api_key"],
                condition=Q(api_key__isnull=False, model_group__isnull=True),
                name="gateway_budget_one_per_key",
            ),
            models.UniqueConstraint(
                fields=["user"],
                condition=Q(user__isnull=False, model_group__isnull=True),
                name="gateway_budget_one_per_user",
            ),
        ]

    def __str__(self) -> str:
        who = self.api_key or self.user or _("default")
        model = self.model_group or _("all models")
        return f"{who} · {model}: {self.tokens_per_month} tokens/month"

    def clean(self) -> None:
        if self.scope == self.Scope.API_KEY and self.user_id is not None:
            raise ValidationError({"user": _("A per-API-key budget names a key, not a user.")})
        if self.scope == self.Scope.USER and self.api_key_id is not None:
            raise ValidationError({"api_key": _("A per-user budget names a user, not a key.")})


class ModelUsage(models.Model):
    """Requests, tokens, errors and latency per day, model group, API key and user (aggregated).

    Written in batches from the Redis counters by ``chat.gateway.usage.usage_flush`` (never
    per request). ``api_key_id`` / ``user_id`` are plain numbers (0: none, anonymous) so the
    history survives deleted keys and users; ``api_key_prefix`` says which key it was.
    """

    day = models.DateField(_("day"))
    model = models.CharField(_("model"), max_length=100)
    api_key_id = models.PositiveIntegerField(_("API key id"), default=0)
    api_key_prefix = models.CharField(_("API key"), max_length=16, blank=True)
    user_id = models.PositiveIntegerField(_("user id"), default=0)
    requests = models.PositiveBigIntegerField(_("requests"), default=0)
    cached = models.PositiveBigIntegerField(_("from the response cache"), default=0)
    errors = models.PositiveBigIntegerField(_("errors"), default=0)
    prompt_tokens = models.PositiveBigIntegerField(_("prompt tokens"), default=0)
    completion_tokens = models.PositiveBigIntegerField(_("completion tokens"), default=0)
    latency_ms = models.PositiveBigIntegerField(_("total latency (ms)"), default=0)

    class Meta:
        verbose_name = _("model usage")
        verbose_name_plural = _("model usage")
        ordering = ["-day", "model"]
        constraints = [
            models.UniqueConstraint(fields=["day", "model", "api_key_id", "user_id"], name="gateway_usage_one_row")
        ]
        indexes = [models.Index(fields=["model", "day"], name="gateway_usage_model_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.model} key={self.api_key_id} user={self.user_id}"


class UsageFlush(models.Model):
    """One applied batch of usage counters: a batch is added to ``ModelUsage`` at most once."""

    batch = models.CharField(max_length=64, unique=True)
    rows = models.PositiveIntegerField(default=0)
    flushed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("usage flush")
        verbose_name_plural = _("usage flushes")

    def __str__(self) -> str:
        return self.batch


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
