"""A real headless Chromium against the live server: ask, watch the answer stream in with sources, press stop."""

from __future__ import annotations

import shutil
import tempfile

import pytest

from chat.models import Message
from tests.chat.conftest import GUIDE_TITLE_PREFIX, nonce
from tests.tools import need

pytestmark = [
    pytest.mark.browser,
    pytest.mark.services,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("endpoints"),
]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="session")
def chat_live(django_db_setup, django_db_blocker):
    """A live server of its own, started after collectstatic: with DEBUG off, WhiteNoise serves
    only what STATIC_ROOT held when the server started (chat.js, chat.css)."""
    from django.core.management import call_command

    from tests.live import LiveServer

    call_command("collectstatic", "--noinput", verbosity=0)
    # Model groups a test adds are loaded within half a second.
    server = LiveServer(env={"CHAT_SETTINGS_TTL_S": "0", "INFERENCE_REGISTRY_REFRESH_S": "0.5"})
    server.start()
    yield server
    server.stop()


@pytest.fixture
def browser():
    need(
        bool(shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)),
        "chromium / chromium-driver are not installed (deploy/local/install chromium)",
    )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chat-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
        "--lang=ko",
    ):
        options.add_argument(flag)
    options.add_experimental_option("prefs", {"intl.accept_languages": "ko,ko-KR"})  # LocaleMiddleware picks Korean
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def test_it_streams_an_answer_with_a_source_and_stops(chat_settings, guide, chat_live, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    chat_settings.max_tokens = 120  # long enough to stop mid-answer; the source still fits a 512-token window
    chat_settings.save()
    wait = WebDriverWait(browser, 90, poll_frequency=0.05)
    browser.get(chat_live.url + "/")
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "ko"
    wait.until(
        lambda d: (
            d.execute_script("return document.getElementById('connection-status').textContent") == "연결되었습니다."
        )
    )

    box = browser.find_element(By.ID, "composer-input")
    box.send_keys(f"빈집 철거 지원금은 얼마인가요? demolition subsidy ({nonce()})")
    box.send_keys(Keys.ENTER)

    def answer_text(d) -> str:
        return d.execute_script(
            "const b = document.querySelector('.message.assistant .body'); return b ? b.textContent : ''"
        )

    first = wait.until(lambda d: answer_text(d) or False)
    grown = wait.until(lambda d: (len(answer_text(d)) > len(first) and answer_text(d)) or False)
    assert len(grown) > len(first)  # text streams in, it does not arrive at once
    link = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant .sources li a") or False)[0]
    assert link.text.startswith(GUIDE_TITLE_PREFIX)

    stop = browser.find_element(By.ID, "stop-button")
    assert stop.is_displayed()
    stop.click()
    note = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant .note") or False)[0]
    assert note.text == "중지했습니다. 지금까지의 답변은 저장되었습니다."
    assert not stop.is_displayed()
    assert browser.find_element(By.ID, "send-button").is_enabled()
    assert browser.switch_to.active_element == browser.find_element(By.ID, "composer-input")

    answer = Message.objects.filter(role="assistant").latest("created_at")
    assert answer.status == "partial" and answer.content
    assert browser.find_elements(By.CSS_SELECTOR, ".message.assistant .actions button")  # feedback + regenerate


def test_a_signed_in_user_picks_a_model_and_that_model_answers(chat_settings, chat_live, browser, alice):
    """Two chat models (the same llama.cpp server under two names): the picker shows both, the
    message frame carries the choice, the answer is stored under the model chosen."""
    from django.conf import settings
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    from inference.models import ModelEndpoint, ModelGroup
    from tests.chat.conftest import session_cookie

    chat_settings.retrieval_enabled = False
    chat_settings.save()
    alt = ModelGroup.objects.create(name="smollm2-alt")
    ModelEndpoint.objects.create(
        name="llm-alt", kind="generation", protocol="openai", base_url=settings.VLLM_URL or settings.LOCAL_LLM_URL,
        group=alt,
    )  # fmt: skip
    wait = WebDriverWait(browser, 90, poll_frequency=0.1)
    browser.get(chat_live.url + "/healthz")
    browser.add_cookie({"name": "sessionid", "value": session_cookie(alice), "path": "/"})

    def picker(d):
        d.get(chat_live.url + "/")
        return d.find_elements(By.ID, "model-select") or False

    (select,) = wait.until(picker)  # the server's registry picks the new group up within 0.5 s
    assert {o.get_attribute("value") for o in select.find_elements(By.TAG_NAME, "option")} >= {"smollm2-alt"}
    Select(select).select_by_value("smollm2-alt")
    wait.until(
        lambda d: (
            d.execute_script("return document.getElementById('connection-status').textContent") == "연결되었습니다."
        )
    )
    box = browser.find_element(By.ID, "composer-input")
    box.send_keys(f"Say hi ({nonce()})")
    box.send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant .actions button") or False)
    answer = Message.objects.filter(role="assistant").latest("created_at")
    assert answer.model == "smollm2-alt" and answer.conversation.user_id == alice.pk


def test_model_output_cannot_inject_script(chat_settings, chat_live, browser):
    """A stored answer full of HTML renders as text; nothing runs."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from chat.models import Conversation

    browser.get(chat_live.url + "/")
    session_key = browser.get_cookie("sessionid")["value"]
    conversation = Conversation.objects.create(session_key=session_key, title="xss")
    Message.objects.create(conversation=conversation, role="user", content="<img src=x onerror=window.__pwned=1>")
    Message.objects.create(
        conversation=conversation,
        role="assistant",
        content='<script>window.__pwned=1</script><img src=x onerror="window.__pwned=1"> [x](javascript:window.__pwned=1)',
        citations=[
            {
                "n": 1,
                "title": "<img src=x onerror=window.__pwned=1>",
                "snippet": "<b>s</b>",
                "url": "javascript:window.__pwned=1",
                "document_id": 1,
                "chunk_id": 1,
                "score": 1,
                "cited": True,
            }
        ],
    )
    browser.refresh()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".conversation"))
    browser.find_element(By.CSS_SELECTOR, ".conversation").click()
    WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant"))
    for link in browser.find_elements(By.CSS_SELECTOR, ".message.assistant a"):
        if link.get_attribute("href"):
            link.click() if link.get_attribute("href").startswith("javascript:") else None
    assert browser.execute_script("return window.__pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, ".message img, .message script")


@pytest.fixture
def embedded_live(transactional_db, chat_live, tmp_path):
    """The embedded default, as `make run` serves it: the local search backend, in-process e5, no Redis,
    extractive answers; the sample knowledge ingested through the platform."""
    import uuid

    from django.test import override_settings

    from knowledge.sample import load_sample_knowledge
    from knowledge.search import reset_backends
    from tests.knowledge.conftest import backend_settings
    from tests.live import LiveServer

    alias = f"vh-test-embedded-{uuid.uuid4().hex[:8]}"
    with override_settings(
        SEARCH_BACKEND="local",
        SEARCH_BACKENDS=backend_settings(alias),
        KNOWLEDGE_JOBS_INLINE=True,
        MEDIA_ROOT=str(tmp_path / "media"),
    ):
        reset_backends()
        report = load_sample_knowledge(run_jobs=True)
        assert all("indexed" in line for line in report.lines), report.lines
    reset_backends()
    server = LiveServer(
        env={
            "SEARCH_BACKEND": "local",
            "SEARCH_INDEX_ALIAS": alias,
            "ES_URL": "",
            "TRITON_URL": "",
            "TRITON_GRPC_URL": "",
            "INFERENCE_EMBEDDING_BACKEND": "local",
            "REDIS_URL": "",
            "CHAT_ANSWER_MODE": "extractive",
            "CHAT_SETTINGS_TTL_S": "0",
        }
    )
    server.start()
    yield server
    server.stop()


def test_on_the_embedded_default_a_korean_question_gets_the_fact_with_its_citation(embedded_live, browser):
    """`make run`'s model cannot answer Korean: the extractive answer quotes the sample document, cited."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90, poll_frequency=0.05)
    browser.get(embedded_live.url + "/")
    wait.until(
        lambda d: (
            d.execute_script("return document.getElementById('connection-status').textContent") == "연결되었습니다."
        )
    )
    box = browser.find_element(By.ID, "composer-input")
    box.send_keys("빈집 철거 보조금은 한 동당 최대 얼마까지 받을 수 있나요?")
    box.send_keys(Keys.ENTER)
    # The end frame replaces the streamed text with the rendered answer, citations linked.
    cite = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".message.assistant .body sup.cite a") or False)[0]
    body = browser.find_element(By.CSS_SELECTOR, ".message.assistant .body").text
    assert "1,500만 원" in body, body
    target = cite.get_attribute("href").rsplit("#", 1)[1]
    item = browser.find_element(By.ID, target)
    assert "빈집 철거 보조금 신청 절차" in item.text, item.text
