from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = "Inference"

    def ready(self) -> None:
        # No database access here: the endpoint registry loads lazily on first use
        # (and syncs the environment's endpoints then); see inference/registry.py.
        from inference.health import readiness_checks
        from inference.selectors import endpoint_list
        from monitoring import dashboard, health

        health.register_provider(readiness_checks)
        dashboard.register_endpoint_source(endpoint_list)
        # Pay the client libraries' import cost (about a second on a busy box) at
        # start-up, not inside the first /readyz or chat request's time budget.
        from django.conf import settings

        import inference.clients.openai

        if settings.TRITON_URL:
            import tritonclient.http.aio

            import inference.clients.triton  # noqa: F401
        if getattr(settings, "TRITON_GRPC_URL", None):
            import tritonclient.grpc.aio  # noqa: F401
