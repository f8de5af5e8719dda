"""A real Chromium (Debian's /usr/bin/chromium, never downloaded) driven by Playwright against pytest-django's
live server. Screenshots of every open page are saved to test-results/ on failure.

Playwright's sync API runs an event loop in this thread, so Django's async-safety check is switched off for the ORM
calls the tests make between steps: per test, through monkeypatch, and not at import. Left in os.environ for the
session it would leak into the subprocesses of tests/test_settings.py and fail `check --deploy` (async.E001).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
RESULTS = Path(__file__).resolve().parents[3] / "test-results"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(autouse=True)
def _allow_orm_beside_playwright(monkeypatch):
    """Autouse, so it is set up before the browser and the user fixtures, and undone after both."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"needs Debian's chromium at {CHROMIUM}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def new_page(browser, request):
    """new_page() → a page in a fresh browser context (its own cookies: one signed-in person per context)."""
    contexts = []

    def make():
        context = browser.new_context()
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context.new_page()

    yield make
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        RESULTS.mkdir(exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.nodeid)
        for n, context in enumerate(contexts):
            for m, page in enumerate(context.pages):
                with contextlib.suppress(Exception):  # a closed page cannot be photographed; keep the others
                    page.screenshot(path=str(RESULTS / f"{name}-{n}-{m}.png"), full_page=True)
    for context in contexts:
        context.close()
