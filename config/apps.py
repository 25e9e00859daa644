"""The project package as an app: what belongs to no domain app (core /readyz probes)."""

from django.apps import AppConfig


class PlatformConfig(AppConfig):
    name = "config"
    label = "platform"
    verbose_name = "Platform"

    def ready(self) -> None:
        from config import checks

        checks.register_core_checks()
