"""Model groups and endpoints: which public model names exist, and where their requests go.

A ``ModelGroup`` is a model name clients ask for (``model`` in the OpenAI API), with
optional aliases and an ordered list of fallback groups; its ``ModelEndpoint`` rows are
the servers that answer for it, each with the upstream model name it serves, a weight
and a priority. The database is the source of truth; the request path never reads it
directly. ``inference.registry`` keeps an in-memory snapshot per process (refreshed
periodically and when an endpoint or group is saved through the services).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from inference.secrets import EncryptedTextField

# What a model name may look like: OpenAI-style ids ("gpt-4o", "Qwen/Qwen2.5-7B-Instruct",
# "llama3:8b"). No spaces, commas (lists of names are comma-separated), "|" (the usage
# counters' separator) or braces (Redis Cluster hash tags).
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,99}$")
model_name_validator = RegexValidator(
    MODEL_NAME_RE,
    _("Letters, digits and . _ : / @ + - (starting with a letter or digit), at most 100 characters."),
)


def name_list(raw: str) -> list[str]:
    """Comma-separated names -> list, blanks dropped, order kept, duplicates removed."""
    seen: dict[str, None] = {}
    for part in (raw or "").split(","):
        name = part.strip()
        if name:
            seen.setdefault(name, None)
    return list(seen)


class ModelGroup(models.Model):
    """A model name clients can ask for, served by the endpoints that name this group.

    Routing, balancing, affinity, breakers and failover work among the group's endpoints;
    when none can answer (or the group is over its limits, or the prompt exceeds its
    context window) the ``fallbacks`` are tried in order, before the first token only.
    """

    class Kind(models.TextChoices):
        GENERATION = "generation", _("generation (chat)")
        EMBEDDING = "embedding", _("embedding")

    class Source(models.TextChoices):
        ADMIN = "admin", _("admin")
        # Named after VLLM_MODEL / LOCAL_LLM_MODEL / INFERENCE_EMBEDDING_MODEL_NAME by ``sync_endpoints``.
        ENV = "env", _("environment")

    name = models.CharField(
        _("model name"),
        max_length=100,
        unique=True,
        validators=[model_name_validator],
        help_text=_("The name clients send as `model` (e.g. qwen2.5-7b-instruct); listed by /v1/models."),
    )
    aliases = models.CharField(
        _("aliases"),
        max_length=500,
        blank=True,
        help_text=_("Other names that reach this group, comma-separated (e.g. gpt-4o-mini, default)."),
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices, default=Kind.GENERATION)
    fallbacks = models.CharField(
        _("fallbacks"),
        max_length=500,
        blank=True,
        help_text=_(
            "Other generation groups tried in this order when this one has no healthy endpoint, is over its "
            "limits, or the prompt exceeds its context window (before the first token only). Comma-separated."
        ),
    )
    context_window = models.PositiveIntegerField(
        _("context window (tokens)"),
        null=True,
        blank=True,
        help_text=_("Blank: the smallest window of its endpoints, else the chat settings' value."),
    )
    enabled = models.BooleanField(_("enabled"), default=True, help_text=_("Disabled: the name is unknown to clients."))
    source = models.CharField(_("source"), max_length=8, choices=Source.choices, default=Source.ADMIN)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "name"]
        verbose_name = _("model group")
        verbose_name_plural = _("model groups")
        constraints = [
            # Every embedding group would be served by the same embedding backend (the vectors
            # must match the search index): one public name, with aliases for the others.
            models.UniqueConstraint(
                fields=["kind"], condition=Q(kind="embedding"), name="inference_one_embedding_group"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def alias_list(self) -> list[str]:
        return name_list(self.aliases)

    @property
    def fallback_list(self) -> list[str]:
        return name_list(self.fallbacks)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        aliases = self.alias_list
        bad = [a for a in aliases if not MODEL_NAME_RE.match(a)]
        if bad:
            errors["aliases"] = _("Not a valid model name: %(names)s.") % {"names": ", ".join(bad)}
        elif self.name in aliases:
            errors["aliases"] = _("An alias repeats the model name.")
        else:
            others = ModelGroup.objects.exclude(pk=self.pk)
            taken = sorted(
                {g.name for g in others if g.name in aliases}
                | {a for g in others for a in g.alias_list if a in aliases or a == self.name}
            )
            if taken:
                errors["aliases"] = _("Already used by another group: %(names)s.") % {"names": ", ".join(taken)}
        fallbacks = self.fallback_list
        if fallbacks:
            if self.kind != self.Kind.GENERATION:
                errors["fallbacks"] = _("Only generation groups fall back.")
            elif self.name in fallbacks:
                errors["fallbacks"] = _("A group cannot fall back to itself.")
            else:
                known = set(
                    ModelGroup.objects.filter(name__in=fallbacks, kind=self.Kind.GENERATION).values_list(
                        "name", flat=True
                    )
                )
                missing = [f for f in fallbacks if f not in known]
                if missing:
                    errors["fallbacks"] = _("No generation group named: %(names)s.") % {"names": ", ".join(missing)}
        if errors:
            raise ValidationError(errors)


class ModelEndpoint(models.Model):
    class Kind(models.TextChoices):
        GENERATION = "generation", _("generation")
        EMBEDDING = "embedding", _("embedding")
        RERANKER = "reranker", _("reranker")

    class Protocol(models.TextChoices):
        OPENAI = "openai", _("OpenAI-compatible HTTP")
        TRITON_HTTP = "triton_http", _("Triton HTTP")
        TRITON_GRPC = "triton_grpc", _("Triton gRPC")

    class Source(models.TextChoices):
        ADMIN = "admin", _("admin")
        # Created and kept up to date from VLLM_URL / TRITON_URL by ``sync_endpoints``.
        ENV = "env", _("environment")

    name = models.SlugField(
        _("name"),
        max_length=64,
        unique=True,
        help_text=_("Short identifier, used in logs and as the metrics label."),
    )
    kind = models.CharField(_("kind"), max_length=16, choices=Kind.choices)
    protocol = models.CharField(_("protocol"), max_length=16, choices=Protocol.choices)
    base_url = models.CharField(
        _("base URL"),
        max_length=500,
        help_text=_(
            "OpenAI-compatible: the URL ending in /v1 (http://host:8000/v1). Triton HTTP: http://host:8000. "
            "Triton gRPC: host:8001."
        ),
    )
    group = models.ForeignKey(
        ModelGroup,
        verbose_name=_("model group"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="endpoints",
        help_text=_("Generation: the model name clients use to reach this endpoint (its group)."),
    )
    model_name = models.CharField(
        _("upstream model name"),
        max_length=200,
        blank=True,
        help_text=_(
            "Model name sent upstream (the vLLM served model name, the Triton model). "
            "Blank for an OpenAI-compatible server: the first model of /v1/models."
        ),
    )
    weight = models.PositiveIntegerField(
        _("weight"),
        default=100,
        validators=[MinValueValidator(1)],
        help_text=_("Share of traffic among endpoints of the same kind and priority."),
    )
    priority = models.SmallIntegerField(
        _("priority"),
        default=0,
        help_text=_("Lower is preferred: endpoints of a higher value only get traffic when the lower ones fail."),
    )
    connect_timeout_s = models.FloatField(_("connect timeout (s)"), default=3.0, validators=[MinValueValidator(0.01)])
    read_timeout_s = models.FloatField(
        _("read / first-token timeout (s)"),
        default=60.0,
        validators=[MinValueValidator(0.01)],
        help_text=_("Bound on the wait for the first token, and between two chunks of a stream."),
    )
    total_timeout_s = models.FloatField(
        _("total timeout (s)"),
        default=300.0,
        validators=[MinValueValidator(0.01)],
        help_text=_("Bound on one whole request, retries included."),
    )
    max_concurrent = models.PositiveIntegerField(
        _("max concurrent requests"), default=16, validators=[MinValueValidator(1)]
    )
    max_queue = models.PositiveIntegerField(
        _("max queue"),
        default=64,
        help_text=_("Requests allowed to wait for a slot; beyond it a request is refused at once (busy)."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    # Encrypted at rest (inference/secrets.py); write-only in the admin.
    api_key = EncryptedTextField(_("API key"), blank=True)
    default_params = models.JSONField(
        _("default generation parameters"),
        default=dict,
        blank=True,
        help_text=_('Sent with every request unless the caller sets them, e.g. {"temperature": 0.2}.'),
    )
    context_window = models.PositiveIntegerField(
        _("context window (tokens)"), null=True, blank=True, help_text=_("Blank when unknown.")
    )
    source = models.CharField(_("source"), max_length=8, choices=Source.choices, default=Source.ADMIN)

    # Health, written by ``check_endpoints`` and the admin's "check now".
    last_check_at = models.DateTimeField(_("last check"), null=True, blank=True)
    last_latency_ms = models.FloatField(_("latency (ms)"), null=True, blank=True)
    last_error = models.TextField(_("last error"), blank=True)
    healthy = models.BooleanField(_("healthy"), null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["kind", "priority", "name"]
        verbose_name = _("model endpoint")
        verbose_name_plural = _("model endpoints")

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        openai = self.protocol == self.Protocol.OPENAI
        if self.kind == self.Kind.GENERATION and not openai:
            errors["protocol"] = _("Generation endpoints speak the OpenAI-compatible protocol.")
        if self.kind in (self.Kind.EMBEDDING, self.Kind.RERANKER) and openai:
            errors["protocol"] = _("Embedding and reranker endpoints are Triton models (HTTP or gRPC).")
        if self.kind == self.Kind.GENERATION and self.group_id is None:
            errors["group"] = _("A generation endpoint serves a model group: choose (or create) one.")
        elif self.kind == self.Kind.GENERATION and self.group.kind != ModelGroup.Kind.GENERATION:
            errors["group"] = _("Choose a generation model group.")
        if self.kind != self.Kind.GENERATION and self.group_id is not None:
            errors["group"] = _("Only generation endpoints belong to a model group.")
        if self.kind in (self.Kind.EMBEDDING, self.Kind.RERANKER) and not self.model_name:
            errors["model_name"] = _("A Triton endpoint needs the Triton model name.")
        url_error = base_url_error(self.protocol, self.base_url or "")
        if url_error:
            errors["base_url"] = url_error
        if self.read_timeout_s and self.total_timeout_s and self.read_timeout_s > self.total_timeout_s:
            errors["read_timeout_s"] = _("The read timeout cannot exceed the total timeout.")
        if not isinstance(self.default_params, dict):
            errors["default_params"] = _("Default parameters must be a JSON object.")
        if errors:
            raise ValidationError(errors)

    @property
    def api_key_hint(self) -> str:
        """What the admin may show of the key: whether one is set, never any of its characters."""
        return mask_secret(self.api_key)


def mask_secret(secret: str) -> str:
    return str(_("set (hidden)")) if secret else ""


def base_url_error(protocol: str, url: str) -> str | None:
    """A message when ``url`` cannot address an endpoint speaking ``protocol``, else None."""
    if protocol == ModelEndpoint.Protocol.TRITON_GRPC:
        host_port = url.split("://", 1)[-1]
        host, _sep, port = host_port.rpartition(":")
        if not host or not port.isdigit():
            return str(_("A Triton gRPC address is host:port, e.g. 127.0.0.1:8001."))
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return str(_("An http:// or https:// URL is required."))
    return None
