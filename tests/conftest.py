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
