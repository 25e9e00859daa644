"""Suite-wide fixtures.

The test command (``make test``) starts the real services and exports their
addresses (.local/services.env); tests marked ``services`` need them, tests
marked ``fast`` need nothing. Without the services' env vars, ``services``
tests are skipped with a reason rather than failing obscurely, so
``pytest -m fast`` works anywhere.
"""

from __future__ import annotations

import os

import pytest

from tests.live import LiveServer

SERVICE_VARS = ("DATABASE_URL", "REDIS_URL", "ES_URL", "TRITON_URL", "VLLM_URL")

# Usage counters reach PostgreSQL only when a test flushes them: no background flusher in the live
# servers started from here (they inherit this) nor in this process (the fixture below), so no test
# finds rows it did not ask for. tests/gateway/test_usage.py turns it on where it is the subject.
os.environ.setdefault("GATEWAY_USAGE_FLUSH_S", "0")
# Every test client is 127.0.0.1: the suite opens far more cookie-less sessions from it than one
# address may in production (CHAT_ANONYMOUS_SESSIONS_PER_IP). Out of the way here;
# tests/security/test_session_limit.py sets them low where they are the subject.
os.environ.setdefault("CHAT_ANONYMOUS_SESSIONS_PER_IP", "1000000")
os.environ.setdefault("CHAT_CONVERSATIONS_PER_WINDOW", "1000000")  # likewise (schemathesis makes hundreds)


@pytest.fixture(scope="session", autouse=True)
def _no_background_usage_flush():
    from django.conf import settings

    settings.GATEWAY_USAGE_FLUSH_S = 0
    settings.CHAT_ANONYMOUS_SESSIONS_PER_IP = int(os.environ["CHAT_ANONYMOUS_SESSIONS_PER_IP"])
    settings.CHAT_CONVERSATIONS_PER_WINDOW = int(os.environ["CHAT_CONVERSATIONS_PER_WINDOW"])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [name for name in SERVICE_VARS if not os.environ.get(name)]
    if not missing or os.environ.get("CI_REQUIRE_SERVICES"):
        return
    skip = pytest.mark.skip(reason=f"needs the real services (unset: {', '.join(missing)}); run `make test`")
    for item in items:
        if "services" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def live_asgi(django_db_setup, django_db_blocker):
    """The real ASGI app (uvicorn, the production server) in a subprocess, on the test database.

    Tests that write data the server must see use ``transactional_db`` (data is
    committed, not hidden in a rolled-back transaction).
    """
    server = LiveServer()
    server.start()
    yield server
    server.stop()
