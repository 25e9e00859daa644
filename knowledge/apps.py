from django.apps import AppConfig
from django.core import checks


class KnowledgeConfig(AppConfig):
    name = "knowledge"
    verbose_name = "Knowledge"

    def ready(self) -> None:
        from monitoring import health

        checks.register(check_search_backend, checks.Tags.compatibility)
        # Import the search client at start-up (about a second on a busy box), not
        # inside the first /readyz or chat request's time budget.
        from django.core.exceptions import ImproperlyConfigured

        from knowledge.search import get_search_backend

        try:
            get_search_backend()  # builds the backend object; connects to nothing
        except ImproperlyConfigured:
            pass  # reported by the system check above, with a hint

        async def probe_search() -> str:
            from knowledge.search import get_search_backend

            return await get_search_backend().ping()

        # Not required: without search, chat still answers (without citations); an ES
        # outage must not take every web process out of the load balancer.
        health.register("search", probe_search, required=False)


def check_search_backend(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Fail `manage.py check` (and startup) on a bad SEARCH_BACKEND instead of at the first search."""
    from django.core.exceptions import ImproperlyConfigured

    from knowledge.search import get_search_backend

    try:
        get_search_backend()
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc), hint="See SEARCH_BACKEND / SEARCH_BACKENDS in config/settings.py.", id="knowledge.E001"
            )
        ]
    return []
