"""Browser tests: Playwright (sync API) drives the system Chromium against pytest-django's live
server. The whole folder is skipped, with the reason, where Playwright or Chromium is missing."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pytest_django import Settings

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PASSWORD = "correct-horse-battery-staple"
HERE = Path(__file__).resolve().parent


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright is not installed: pip install -r requirements-dev.txt"
    if not CHROMIUM.exists():
        return "Chromium is not installed: apt-get install chromium"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip this folder's tests, saying what to install, when the browser cannot run."""
    reason = _missing()
    if reason is None:
        return
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless system Chromium, one per test module (Playwright's own download is not used)."""
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread, and Django refuses ORM calls
    # from a thread with a running loop unless told that it is safe (it is: nothing here is
    # async, the loop only talks to the browser).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            chromium = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            yield chromium
            chromium.close()


@pytest.fixture(autouse=True)
def web_settings(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain static files (no collectstatic manifest), fast password hashing and the configured
    answer rate. Secure cookies stay on: Chromium treats http://localhost as a secure origin."""
    from rest_framework.settings import api_settings
    from rest_framework.throttling import ScopedRateThrottle

    # The throttle keeps its rates on the class, so a test that reloads DRF's settings can leave
    # a stricter rate behind for the rest of the process; these tests run last (pytest-django
    # puts transactional tests at the end), so they set the configured rate again.
    monkeypatch.setattr(
        ScopedRateThrottle, "THROTTLE_RATES", dict(api_settings.DEFAULT_THROTTLE_RATES)
    )
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def page(browser: Browser, live_server: Any) -> Iterator[Page]:
    """A fresh browser context (no cookies, no storage) on the live server; an uncaught script
    error on the page fails the test (an HTTP error status the page handles is no error)."""
    context = browser.new_context(base_url=live_server.url, viewport={"width": 800, "height": 900})
    context.set_default_timeout(5_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, f"the page reported errors: {errors}"


@pytest.fixture
def log_in(page: Page) -> Callable[[str, str], None]:
    """Log in through the real login form, then land on `next`."""

    def go(username: str, next_url: str) -> None:
        page.goto(f"/accounts/login/?next={next_url}")
        page.fill("#id_username", username)
        page.fill("#id_password", PASSWORD)
        page.press("#id_password", "Enter")
        page.wait_for_url(f"**{next_url}")

    return go


@pytest.fixture
def expect() -> Callable[..., Any]:
    """Playwright's waiting assertions (imported here, so that collection needs no Playwright)."""
    from playwright.sync_api import expect

    return expect
