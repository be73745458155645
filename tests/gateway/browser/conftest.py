"""Real headless Chromium (Debian's), driven by Playwright, against the session's stack."""
from __future__ import annotations

import pytest
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/lib/chromium/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage", "--disable-sync"]


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def new_page(browser, stack):
    context = browser.new_context(base_url=stack.url, accept_downloads=True)
    pg = context.new_page()
    outside = []
    pg.on("request", lambda req: outside.append(req.url) if not req.url.startswith((stack.url, "data:", "about:")) else None)
    pg.outside_requests = outside
    return pg


@pytest.fixture
def page(browser, stack):
    pg = new_page(browser, stack)
    yield pg
    pg.context.close()
