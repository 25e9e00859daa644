"""After a real chat, the live platform's /metrics has samples for every API-side name the
dashboards and alert rules use (issue: observability)."""

from __future__ import annotations

import httpx
import openai
import pytest

from chat.gateway.services import apikey_create
from tests.chat.conftest import nonce
from tests.deploy.metric_names import platform_metric_names
from tests.deploy.test_metrics_endpoint import NEEDS_A_CHAT, api_side_names_in_use, exposed_names

pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]

# Only sampled when something fails or queues; declared (a # TYPE line) is what we can ask.
SAMPLED_ONLY_ON_TROUBLE = {"chat_errors_total", "inference_queue_wait_seconds_bucket"}


def test_metrics_after_a_chat_cover_the_dashboards_and_alerts(chat_settings, endpoints, guide, live_asgi, alice):
    api_key = apikey_create(name="metrics test", user=alice, scopes=["chat"]).full_key
    client = openai.OpenAI(base_url=f"{live_asgi.url}/v1", api_key=api_key, timeout=120, max_retries=0)
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": f"빈집 철거 보조금은 어떻게 신청하나요? ({nonce()})"}],
        max_tokens=8,
        stream=True,
        temperature=0,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

    text = httpx.get(f"{live_asgi.url}/metrics", timeout=10).text
    sampled, exposed = exposed_names(text)
    used = api_side_names_in_use()
    optional = {n for n in used if n.startswith(("process_", "api_worker_"))}
    assert not (used - optional - exposed), f"not exposed: {sorted(used - optional - exposed)}"
    must_sample = (NEEDS_A_CHAT & used) - SAMPLED_ONLY_ON_TROUBLE
    # The websocket gauge and the request histogram are sampled from the first scrape on.
    must_sample |= {"request_duration_seconds_bucket", "http_requests_total"} & set().union(
        *platform_metric_names().values()
    )
    assert not (must_sample - sampled), f"no samples after a chat: {sorted(must_sample - sampled)}"
