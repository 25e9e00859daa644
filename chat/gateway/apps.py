from django.apps import AppConfig


class GatewayConfig(AppConfig):
    """Gateway controls in front of every model call: API keys, rate limits, response cache, validation."""

    name = "chat.gateway"
    label = "gateway"
    verbose_name = "Gateway controls"
