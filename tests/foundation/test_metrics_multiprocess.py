"""/metrics stays correct with several worker processes (the production server)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict

from tests.live import LiveServer


def _count(text: str, endpoint: str) -> float:
    pattern = re.compile(
        rf'^http_requests_total\{{[^}}]*endpoint="{re.escape(endpoint)}"[^}}]*status="2xx"[^}}]*\}} (\S+)$', re.M
    )
    return sum(float(v) for v in pattern.findall(text))


@pytest.mark.services
@pytest.mark.django_db(transaction=True)
def test_it_sums_counters_over_gunicorn_workers(tmp_path):
    server = LiveServer(gunicorn_workers=2, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    server.start()
    try:
        # Both workers booted: each samples its CPU into its own file at start.
        deadline = time.monotonic() + 30
        while len(list(tmp_path.glob("counter_*.db"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        # New connections, in parallel, so the kernel spreads them over both workers.
        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(lambda _: httpx.get(f"{server.url}/", timeout=20).status_code, range(200)))
        assert statuses == [200] * 200, server.log_tail()
        scrapes = [httpx.get(f"{server.url}/metrics", timeout=10).text for _ in range(4)]
    finally:
        server.stop()
    # Whichever worker answers the scrape, it reports the sum over all workers.
    assert {_count(text, "chat:index") for text in scrapes} == {200.0}
    # And both workers really served some of them (each writes its own file).
    serving = [
        path.name
        for path in tmp_path.glob("counter_*.db")
        if any(
            "http_requests_total" in key and value > 0
            for key, value, *_ in MmapedDict.read_all_values_from_file(str(path))
        )
    ]
    assert len(serving) == 2, f"expected 2 serving workers, got {serving}: {server.log_tail()}"
