from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Inference"

    def ready(self) -> None:
        # No database access here: the endpoint registry loads lazily on first use
        # (and syncs the environment's endpoints then); see inference/registry.py.
        from inference.health import readiness_checks
        from monitoring import health

        health.register_provider(readiness_checks)
