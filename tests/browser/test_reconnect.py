"""The console when the server goes away and comes back: a visible banner, then the state re-read.

In a module of its own, so that it has a service of its own to stop and start again.
"""

from __future__ import annotations

import signal
import sys

import pytest

from ..processes import Process

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def crash(process: Process) -> None:
    """Kill the server and its worker at once, as a crash or a lost network would, so connections drop now.

    A polite stop waits for open WebSockets up to gunicorn's graceful timeout, which is not what
    this test is about.
    """
    process.signal_group(signal.SIGKILL)
    process.stop()


def test_the_console_says_it_is_reconnecting_and_comes_back(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("rio", display_name="Rio Adeyemi")
    tab = console()
    tab.log_in("rio")
    page = tab.page
    tab.go_available()

    port = stack.service.url.rsplit(":", 1)[1]
    crash(stack.service)
    expect(page.locator("#connection")).to_be_visible(timeout=20_000)
    expect(page.locator("#connection")).to_contain_text("Reconnecting")
    again = Process([sys.executable, "-m", "helpline", "serve", "--port", port], stack.env, stack.service.url,
                    stack.service.log_path.with_name(f"serve-{port}-again.log"))
    try:
        again.wait_ready("/voice/status")
        expect(page.locator("#connection")).to_be_hidden(timeout=30_000)
        # On reconnect the console re-reads the handler's state: it shows what the API now says.
        expect(page.locator("#presence-now")).to_have_text(tab.api_presence(), timeout=10_000)
        expect(page.locator("#idle")).to_be_visible()
    finally:
        tab.close()
        again.stop()
    # While the server was away the browser logged the refused connections; those are expected here.
    tab.errors.clear()
