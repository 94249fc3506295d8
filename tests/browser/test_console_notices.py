"""What the console tells a handler when the service moves them without their asking, and that it
stops saying it once it is over: a missed offer, and a wrap-up whose time ran out. Short offer and
wrap-up times, on a stack of their own, so that both run out within the test."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from ..stack import Stack, start_stack
from .console import DESKTOP

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CALLER = "+447911123456"
ROUTING = {"offer_timeout_s": 4, "wrap_up_s": 4, "skill_fallback_after_s": 60}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp: Path = tmp_path_factory.mktemp("notices")
    yield from start_stack(tmp, f"sqlite:///{tmp / 'helpline.db'}", {"routing": ROUTING})


def test_a_missed_offer_is_explained_until_the_handler_chooses_again(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("mo", display_name="Mo Farrah-Price")
    tab = console(DESKTOP)
    tab.log_in("mo")
    page = tab.page
    tab.go_available()
    sid = stack.emulator.place_call(CALLER, keys=["1", "1", "1"])
    expect(page.locator("#offer")).to_be_visible(timeout=20_000)
    # Nobody answers: the service puts the handler on a break, and the console says why.
    expect(page.locator("#presence-now")).to_have_text("On break", timeout=20_000)
    expect(page.locator("#notice-text")).to_have_text(
        "You missed a call, so you are now on a break. Choose Available when you are ready.")
    # Once they choose Available themselves the notice is over, and goes.
    stack.emulator.hangup(sid)
    tab.go("available", "Available")
    expect(page.locator("#notice")).to_be_hidden()
    tab.go("offline", "Offline")


def test_a_wrap_up_whose_time_runs_out_says_so(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("wen", display_name="Wen Li")
    tab = console(DESKTOP)
    tab.log_in("wen")
    page = tab.page
    identity = tab.go_available()
    stack.emulator.register_client(identity, auto_answer=True)
    sid = stack.emulator.place_call(CALLER, keys=["1", "1", "1"])
    expect(page.locator("#offer")).to_be_visible(timeout=20_000)
    page.keyboard.press("a")
    expect(page.locator("#presence-now")).to_have_text("On a call", timeout=20_000)
    stack.emulator.hangup(sid)
    expect(page.locator("#presence-now")).to_have_text("Wrapping up", timeout=20_000)
    # The handler chooses no outcome: the form closes by itself, and the console says why.
    expect(page.locator("#presence-now")).to_have_text("Available", timeout=20_000)
    expect(page.locator("#wrapup")).to_be_hidden()
    expect(page.locator("#notice-text")).to_have_text(
        "The wrap-up time (0:04) ran out: the call was closed without an outcome, and you are available for calls again.")
    tab.go("offline", "Offline")
