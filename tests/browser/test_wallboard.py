"""The supervisor's wallboard in headless chromium, against `helpline serve` and the Twilio emulator:
a burst of emulated calls arrives, one is answered by a handler and one is abandoned, and the wall
screen follows without a reload; afterwards each call is in call review and in the day's report. The
wall screen fills 1920x1080 and 1280x720 without anything spilling off it."""

from __future__ import annotations

import pytest

from .console import DESKTOP

pytestmark = [pytest.mark.browser, pytest.mark.slow]

FULL_HD = {"width": 1920, "height": 1080}


def test_the_wallboard_follows_a_burst_of_calls_without_a_reload(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("wendy", role="supervisor", display_name="Wendy Supervisor")
    make_user("hugo", display_name="Hugo Handler")
    board = console(FULL_HD)
    board.log_in("wendy", landing="/supervisor")
    board.page.goto(stack.service.url + "/supervisor/wallboard")
    page = board.page
    expect(page.locator("#connection")).to_be_hidden(timeout=15_000)
    expect(page.locator("#wb-waiting")).to_have_text("0")
    # A marker that would vanish on a reload: every change below arrives over the live connection.
    page.evaluate("window.__noReload = true")

    # A handler is on duty before the burst (the first caller rings on their console at once).
    handler = console(DESKTOP)
    handler.log_in("hugo")
    identity = handler.go_available()
    stack.emulator.register_client(identity, auto_answer=True)
    expect(page.locator("#wb-available")).to_have_text("1", timeout=20_000)

    callers = [stack.emulator.place_call(f"+4479111234{n:02d}", keys=["1", "1", "1"]) for n in range(3)]
    expect(page.locator("#wb-waiting")).to_have_text("3", timeout=20_000)
    expect(page.locator("#wb-longest")).not_to_have_text("0:00", timeout=5_000)
    expect(page.locator("#wb-available")).to_have_text("0")  # ringing with the first caller

    # The handler takes the first call in line; another caller gives up.
    expect(handler.page.locator("#offer")).to_be_visible(timeout=20_000)
    handler.page.keyboard.press("a")
    expect(handler.page.locator("#oncall")).to_be_visible(timeout=20_000)
    expect(page.locator("#wb-waiting")).to_have_text("2", timeout=20_000)
    expect(page.locator("#wb-oncall")).to_have_text("1")
    answered = {row.call_sid for row in stack.sql("select call_sid from calls where outcome = 'answered'")}
    waiting = [sid for sid in callers if sid not in answered]  # callers reach the line in any order
    stack.emulator.hangup(waiting[0])
    expect(page.locator("#wb-waiting")).to_have_text("1", timeout=20_000)
    # The caller gave up within seconds: a short abandon, not one against the 30 s target.
    expect(page.locator("#wb-answered")).to_have_text("1", timeout=20_000)
    expect(page.locator("#wb-calls")).to_have_text("3")
    expect(page.locator("#wb-abandoned")).to_have_text("0%")
    expect(page.locator("#wb-abandoned-status")).to_have_text("✓ On target")
    expect(page.locator("#wb-sl-answered")).to_have_text("100%")
    expect(page.locator("#wb-sl-answered-status")).to_have_text("✓ On target")
    # Asterisk's second way: the answer and the short abandon, both within 60 s, of both.
    expect(page.locator("#wb-sl-all")).to_have_text("100%")
    assert page.evaluate("window.__noReload") is True
    assert board.overflow() == []
    page.screenshot(path="/tmp/wallboard-1080.png")
    page.set_viewport_size({"width": 1280, "height": 720})
    assert board.overflow() == []
    assert page.evaluate("document.documentElement.scrollHeight <= window.innerHeight + 1")
    page.screenshot(path="/tmp/wallboard-720.png")

    # The live view offers the supervisor's actions on the call still waiting.
    live = console(DESKTOP)
    live.log_in("wendy", landing="/supervisor")
    row = live.page.locator("#queue-rows tr[data-call-id]")
    expect(row).to_have_count(1, timeout=20_000)
    expect(row.locator("td.actions button")).to_have_text("Move up")
    expect(live.page.locator("#fig-sl60")).not_to_have_text("–")
    assert live.overflow() == []

    for sid in [*answered, waiting[1]]:
        stack.emulator.hangup(sid)
    expect(page.locator("#wb-waiting")).to_have_text("0", timeout=20_000)

    # Afterwards: every call is in review, and in the day's report.
    review = live.page
    review.goto(stack.service.url + "/supervisor/review")
    expect(review.locator("#call-rows tr[data-call-id]")).to_have_count(3, timeout=20_000)
    expect(review.locator("#counts")).to_contain_text("Answered: 1")
    review.locator("#call-rows tr[data-call-id]").last.click()
    expect(review.locator("#story")).to_contain_text("Queued")
    assert live.overflow() == []
    review.goto(stack.service.url + "/supervisor/reports")
    expect(review.locator("#totals")).to_contain_text("Calls3", timeout=20_000)
    # Chart.js drew the day's calls: one day, three calls.
    assert review.evaluate("Chart.getChart(document.getElementById('chart-days')).data.datasets[0].data") == [3]
    assert review.locator("#csv").get_attribute("href").startswith("/api/reports/calls.csv?from=")
    assert live.overflow() == []
