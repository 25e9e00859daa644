"""Model endpoints: where generation, embedding and reranking requests go.

The database is the source of truth for endpoints; the request path never reads
it directly. ``inference.registry`` keeps an in-memory snapshot per process
(refreshed periodically and when an endpoint is saved through the services).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _


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
    model_name = models.CharField(
        _("model name"),
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
    api_key = models.CharField(_("API key"), max_length=500, blank=True)
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
        """What the admin may show of the key: a short prefix, never the key."""
        return mask_secret(self.api_key)


def mask_secret(secret: str) -> str:
    if not secret:
        return ""
    return f"{secret[:4]}…" if len(secret) > 8 else "…"


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
