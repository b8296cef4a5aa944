"""The web page at / in a real browser (Debian's chromium, driven by Playwright): a prompt typed
and sent streams the same text as the API, chat too, the stop button stops, and the page asks
nothing of any other host.

Without chromium these tests skip, unless MYGPT_REQUIRE_BROWSER=1 (as .ci/run sets after
installing it).
"""

from __future__ import annotations

import os
import shutil
import time
from urllib.parse import urlparse

import openai
import pytest
from serving_fixtures import SlowEngine, serving, small_model

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("MYGPT_REQUIRE_BROWSER") == "1":
        raise RuntimeError(
            "MYGPT_REQUIRE_BROWSER=1 but there is no chromium: apt-get install chromium"
        )
    pytest.skip("no chromium (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox"])
        yield browser
        browser.close()


def open_page(browser, url: str, hosts: set):
    page = browser.new_page()
    page.on("request", lambda r: hosts.add(urlparse(r.url).netloc))
    page.goto(url + "/")
    return page


def set_sampling(page, **values):
    for name, value in values.items():
        page.fill(f"#{name}", str(value))


def test_a_typed_prompt_streams_the_apis_text(browser):
    with serving(small_model()) as (url, _):
        client = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
        prompt = "Every effort moves you"
        expected = client.completions.create(
            model="tiny", prompt=prompt, max_tokens=12, temperature=0
        )
        hosts: set = set()
        page = open_page(browser, url, hosts)
        expect(page.locator("#model")).to_have_text("tiny")
        set_sampling(page, temperature=0, max_tokens=12)
        page.fill("#prompt", prompt)
        page.click("#send")
        expect(page.locator("#send")).to_be_enabled(timeout=30_000)
        output = page.locator(".message.completion .text")
        assert output.inner_text() == expected.choices[0].text
        expect(page.locator("#stats")).to_contain_text(f"{expected.usage.completion_tokens} tokens")
        expect(page.locator("#stats")).to_contain_text("tokens/s")

        page.click("#tab-chat")
        page.fill("#prompt", "Hi!")
        page.click("#send")
        expect(page.locator("#send")).to_be_enabled(timeout=30_000)
        messages = [{"role": "user", "content": "Hi!"}]
        chat = client.chat.completions.create(
            model="tiny", messages=messages, max_tokens=12, temperature=0
        )
        assert (
            page.locator(".message.assistant .text").inner_text() == chat.choices[0].message.content
        )
        assert hosts == {urlparse(url).netloc}  # nothing from any other host
        page.close()


def test_the_stop_button_stops_the_stream(browser):
    with serving(small_model(), engine_class=SlowEngine) as (url, app):
        hosts: set = set()
        page = open_page(browser, url, hosts)
        set_sampling(page, max_tokens=100)
        page.fill("#prompt", "Once upon a time")
        page.click("#send")
        expect(page.locator("#stop")).to_be_enabled()
        expect(page.locator(".message.completion .text")).not_to_have_text("", timeout=10_000)
        page.click("#stop")
        expect(page.locator("#send")).to_be_enabled()
        shown = page.locator(".message.completion .text").inner_text()
        page.wait_for_timeout(300)
        assert page.locator(".message.completion .text").inner_text() == shown  # no more text
        engine, deadline = app.state.server.engine, time.monotonic() + 5
        while engine.running and time.monotonic() < deadline:  # its slot, freed within a step
            time.sleep(0.01)
        assert not engine.running
        page.close()
