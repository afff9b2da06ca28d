"""Browser fixtures: Debian's headless Chromium, driven by Playwright, against the real stack.

The stack (gunicorn, `rundramatiq`, the test database, a Redis namespace) is the
integration tests' own. Playwright drives /usr/bin/chromium: nothing is
downloaded (never `playwright install`). Without Chromium or Playwright the
tests skip locally and fail under CI, so CI cannot go green without them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher, make_password
from django.contrib.auth.models import User

# The integration fixtures, shared: a conftest only reaches its own directory.
from tests.integration.conftest import (  # noqa: F401
    database_url,
    git_source,
    make_project,
    make_stack,
    namespace,
    owner_token,
    redis_url,
)
from tests.integration.stack import ROOT

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google's hosts,
# which this machine's closed network refuses many at a time.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# One fixed size, a common laptop's, for every test and every screenshot in docs/: a page must be
# readable at it, and a screenshot only changes when its page does.
VIEWPORT: ViewportSize = {"width": 1400, "height": 900}
# Where each test leaves its screenshots (git-ignored, under var/).
ARTIFACTS = ROOT / "var" / "test-artifacts" / "browser"
DOCS = ROOT / "docs"
# A password the web process can check: the test settings hash with MD5, which
# the stack's settings do not know, so it is hashed with the production default.
PASSWORD = "browser-test-pw"


def _unavailable(reason: str) -> NoReturn:
    """Skip, with the reason, or fail under CI: there a browser test must never be skipped."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser tests", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_playwright() -> None:
    """For a test module's top, before it imports playwright."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _unavailable("playwright is not installed (pip install -r requirements/dev.txt)")


@pytest.fixture
def browser(transactional_db: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """Headless Debian Chromium for one test; closed before the test database is flushed."""
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install --no-install-recommends chromium)")
    require_playwright()
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, so Django would take every
    # ORM call of the test for one made from async code; there is none (Django's advice).
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh context (no cookies) and page; on a failure its last state is saved as an artifact."""
    from playwright.sync_api import expect

    # Generous: under `make test` the stack shares two cores with the rest of the suite.
    expect.set_options(timeout=15_000)
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(15_000)
    page = context.new_page()
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        page.screenshot(path=artifact(request, "failure"), full_page=True)
    context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the call phase's report on the item, for `page` to see whether the test failed."""
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


def artifact(request: pytest.FixtureRequest, name: str) -> Path:
    """var/test-artifacts/browser/<test>-<name>.png (one file per test and name: xdist-safe)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^\w.-]+", "_", request.node.name)
    return ARTIFACTS / f"{test}-{name}.png"


def readme_screenshot(request: pytest.FixtureRequest, name: str) -> Path:
    """docs/<name>.png with UPDATE_SCREENSHOTS=1 (`make screenshots`), else a test artifact.

    Every run takes the picture; only an asked-for run replaces the README's,
    so a test run leaves the working tree as it found it.
    """
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        return DOCS / f"{name}.png"
    return artifact(request, name)


def with_password(user: User, *, password: str = PASSWORD) -> User:
    """Give `user` a password that the stack's web process (default hashers) can check."""
    user.password = make_password(password, hasher=PBKDF2PasswordHasher())
    user.save(update_fields=["password"])
    return user
