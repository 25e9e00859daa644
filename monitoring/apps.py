from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured


class MonitoringConfig(AppConfig):
    name = "monitoring"
    verbose_name = "Monitoring"

    def ready(self) -> None:
        from django.conf import settings

        from monitoring import tracing

        # Before the ASGI handler is built and before any client (Redis, aiohttp, psycopg)
        # connects: the instrumentations wrap what is created after them.
        try:
            cfg = tracing.TracingConfig.from_settings(settings.TRACING)
        except (TypeError, ValueError) as exc:
            raise ImproperlyConfigured(f"Tracing: {exc}") from None
        tracing.configure(cfg)
