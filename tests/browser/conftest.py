"""Fixtures for the browser tests: Debian's chromium (never a downloaded browser), the service and the
Twilio emulator as separate processes on a fresh SQLite database, and console users."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from ..processes import run_cli
from ..stack import Stack, start_stack
from .console import DESKTOP, PASSWORD, Console

CHROMIUM = Path("/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--no-first-run", "--disable-sync",
               # The softphones and the dev phone use a microphone: a fake one (a beep), allowed without asking.
               "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
               "--autoplay-policy=no-user-gesture-required"]
#: Generous enough for a slow machine; the tests never wait for an offer to time out.
ROUTING = {"offer_timeout_s": 30, "wrap_up_s": 120, "skill_fallback_after_s": 60}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """A headless chromium; the tests are skipped, saying why, on a machine without one."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (scripts/test does it when run as root)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`helpline serve` and the emulator on a fresh SQLite database created with `helpline db upgrade`."""
    tmp = tmp_path_factory.mktemp("console")
    yield from start_stack(tmp, f"sqlite:///{tmp / 'helpline.db'}", {"routing": ROUTING})


def open_tabs(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """Tabs made by `make`: each is closed after the test, and none may have logged a script error."""
    opened: list[Any] = []

    def open_one(*args: Any) -> Any:
        tab = make(*args)
        opened.append(tab)
        return tab

    yield open_one
    errors = [error for tab in opened for error in tab.errors]
    for tab in opened:
        tab.close()
    assert not errors, errors


@pytest.fixture
def console(browser: Any, stack: Stack) -> Iterator[Callable[..., Console]]:
    """Open console tabs (a viewport may be given)."""
    yield from open_tabs(lambda viewport=DESKTOP: Console(browser, stack.service.url, viewport))


@pytest.fixture(scope="module")
def make_user(stack: Stack) -> Callable[[str, str, str], str]:
    """Create a console user through `helpline create-user`; returns the username."""

    def make(username: str, role: str = "handler", display_name: str = "") -> str:
        args = ["create-user", username, "--role", role, "--password-stdin"]
        if display_name:
            args += ["--display-name", display_name]
        created = run_cli(args, stack.env, stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        return username

    return make
