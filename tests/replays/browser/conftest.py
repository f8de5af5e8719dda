"""The browser fixtures of tests/approvals/browser (Debian's Chromium through Playwright), shared, not copied."""

from __future__ import annotations

from tests.approvals.browser.conftest import (  # noqa: F401
    _allow_orm_beside_playwright,
    browser,
    new_page,
    pytest_runtest_makereport,
)
