from typing import Any

from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """Gateway controls in front of every model call: API keys, rate limits, response cache, validation."""

    name = "chat.gateway"
    label = "gateway"
    verbose_name = "Gateway controls"

    def ready(self) -> None:
        from chat.gateway.auth import APIKeyAuthentication
        from knowledge import permissions

        # The knowledge API cannot import the gateway (a lower layer), so the gateway plugs its
        # key authentication in; the scope checks are knowledge.permissions' own (fail-closed).
        permissions.register_authentication(APIKeyAuthentication)
        # After a document is deleted, replaced or hidden, answers cached over it are purged
        # (they are already unservable: their index generation is past, chat.gateway.cache).
        from chat.gateway.services.response_cache import cache_purge_stale
        from knowledge.services.generation import on_index_change

        on_index_change(cache_purge_stale)
        _register_schema_extension()


def _register_schema_extension() -> None:
    """Describe API-key authentication in /api/schema/ (drf-spectacular registers subclasses on definition)."""
    from drf_spectacular.extensions import OpenApiAuthenticationExtension

    class APIKeyScheme(OpenApiAuthenticationExtension):
        target_class = "chat.gateway.auth.APIKeyAuthentication"
        name = "apiKey"
        priority = 1

        def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
            return {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "vhk_<8 characters>_<secret>",
                "description": (
                    "An API key created with `manage.py create_api_key` or in the admin. Scopes: "
                    "`chat`, `knowledge:read`, `knowledge:write` (includes read), `export`. Each operation "
                    "names the scope it needs (`x-required-scopes`); a key without it gets 403 "
                    '`{"error": {"code": "permission_denied", "reason": "missing_scope", "scope": ...}}`.'
                ),
            }
