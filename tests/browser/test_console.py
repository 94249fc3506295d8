"""The handler's console in headless chromium, against `helpline serve` and the Twilio emulator.

A call placed through the emulator reaches the console without a reload, rings, is accepted with the
keyboard, is put through to the handler's softphone (the emulator's browser client), and is wrapped
up; a declined call moves on; the layout holds at desktop and tablet sizes.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest

from helpline.emulator.client import EmulatorError

from .console import DESKTOP, TABLET

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CALLER = "+447911123456"
#: Where the screenshots go, for a person to look at.
SHOTS = Path("/tmp")
DIGITS = re.compile(r"^\d+$")


@pytest.fixture(autouse=True)
def no_call_left(stack):
    """Each test starts with nobody on the line, whatever the one before left: the tests share the
    stack and count the queue's rows, and one failure should not become several."""
    yield
    for call in stack.emulator.calls(live=True):
        with contextlib.suppress(EmulatorError):  # it may end by itself meanwhile
            stack.emulator.hangup(call["sid"])


def test_a_call_goes_from_the_queue_to_the_handler_and_is_wrapped_up(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("hana", display_name="Hana Okafor")
    tab = console(DESKTOP)
    tab.log_in("hana")
    page = tab.page
    identity = tab.go_available()
    # The handler's softphone: the emulator's browser client, picking up by itself as the Voice SDK does.
    stack.emulator.register_client(identity, auto_answer=True)

    sid = stack.emulator.place_call(CALLER, keys=["1", "1", "1"])
    # The call reaches the queue and rings on the console, with no reload.
    row = page.locator("#queue-rows tr[data-call-id]")
    expect(row).to_have_count(1, timeout=20_000)
    expect(row.locator("td").nth(2)).to_have_text("Mental health")
    expect(page.locator("#offer")).to_be_visible(timeout=20_000)
    expect(page.locator("#offer")).to_have_class(re.compile(r"\bringing\b"))
    expect(page.locator("#offer-need")).to_have_text("Mental health")
    expect(page.locator("#presence-now")).to_have_text("Ringing")
    expect(page.locator("#accept")).to_be_focused()
    assert 0 < int(page.locator("#offer-countdown").inner_text()) <= 30
    page.screenshot(path=str(SHOTS / "console-offer.png"))

    page.keyboard.press("a")
    expect(page.locator("#oncall")).to_be_visible(timeout=20_000)
    expect(page.locator("#offer")).to_be_hidden()
    expect(page.locator("#call-need")).to_have_text("Mental health")
    expect(page.locator("#call-answers")).to_contain_text("GMC or GDC")
    expect(page.locator("#presence-now")).to_have_text("On a call")
    expect(page.locator("#first-contact")).to_have_attribute("data-call-id", DIGITS)

    # The emulator saw the caller's call leave the queue for the handler's client, and they can talk.
    stack.emulator.wait_for(sid, lambda event: event["kind"] in ("redirected", "bridged", "conference.joined"), timeout=20)
    stack.emulator.client_wait_for(identity, "answered", timeout=20)
    stack.emulator.client_say(identity, "Hello, you are through to the helpline.")
    stack.emulator.wait_for(sid, "heard", timeout=20, text_contains="through to the helpline")
    expect(page.locator("#queue-rows tr[data-call-id]")).to_have_count(0, timeout=20_000)
    page.screenshot(path=str(SHOTS / "console.png"))

    # Letters typed into a field (the first-contact form lives in #first-contact) are words, not shortcuts.
    page.evaluate("""() => {
      const field = Object.assign(document.createElement("input"), { id: "typing-probe", type: "text" });
      document.getElementById("first-contact").append(field);
    }""")
    page.locator("#typing-probe").press_sequentially("wants help; had a hard week")
    expect(page.locator("#typing-probe")).to_have_value("wants help; had a hard week")
    expect(page.locator("#hold-badge")).to_be_hidden()
    expect(page.locator("#wrapup")).to_be_hidden()
    page.evaluate("document.getElementById('typing-probe').remove()")

    # Nor are letters pressed on a choice in the record (a radio button, just picked): E, H and M
    # there must not end, hold or mute the call.
    page.locator("#fc-form input[type=radio]").first.focus()
    for key in "ehm":
        page.keyboard.press(key)
    expect(page.locator("#presence-now")).to_have_text("On a call")
    expect(page.locator("#hold-badge")).to_be_hidden()
    expect(page.locator("#mute")).to_have_attribute("aria-pressed", "false")
    # Outside any form E ends the call only once the handler says so: declined here, the call goes on.
    asked: list[str] = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("e")
    expect(page.locator("#presence-now")).to_have_text("On a call")
    assert asked == ["End the call with the caller?"]

    # Hold and resume from the keyboard.
    page.keyboard.press("h")
    expect(page.locator("#hold-badge")).to_be_visible()
    expect(page.locator("#hold")).to_have_attribute("aria-pressed", "true")
    page.keyboard.press("h")
    expect(page.locator("#hold-badge")).to_be_hidden()
    expect(page.locator("#hold")).to_have_attribute("aria-pressed", "false")

    # A reload mid-call brings the call back: the console re-reads it from the API, and the page's own
    # softphone takes the service's ring back (the emulator's client stops answering for it), while
    # the caller waits on hold.
    stack.emulator.register_client(identity, auto_answer=False)
    page.reload()
    expect(page.locator("#connection")).to_be_hidden(timeout=15_000)
    expect(page.locator("#oncall")).to_be_visible(timeout=10_000)
    expect(page.locator("#call-need")).to_have_text("Mental health")
    expect(page.locator("#presence-now")).to_have_text("On a call")
    page.screenshot(path=str(SHOTS / "console-reloaded.png"))
    expect(page.locator("#softphone-text")).to_have_text("On a call in this tab.", timeout=20_000)
    expect(page.locator("#presence-now")).to_have_text("On a call")
    mark = stack.emulator.events(sid)[-1]["seq"]
    stack.emulator.client_say(identity, "Sorry, I am back with you now.")
    stack.emulator.wait_for(sid, "heard", timeout=20, text_contains="back with you", after=mark)

    # The caller rings off; the console moves to wrap-up by itself, and says who ended the call.
    stack.emulator.hangup(sid)
    expect(page.locator("#presence-now")).to_have_text("Wrapping up", timeout=20_000)
    expect(page.locator("#wrapup")).to_be_visible()
    expect(page.locator("#notice-text")).to_have_text("The caller hung up. Wrap up the call when you are ready.")
    expect(page.locator("#softphone-text")).to_have_text("Softphone ready: calls you accept ring here.")

    page.keyboard.press("w")
    expect(page.locator("input[name=outcome]").first).to_be_focused()
    page.check("input[name=outcome][value=advice_given]")
    page.screenshot(path=str(SHOTS / "console-wrapup.png"), full_page=True)
    page.click("#wrapup-submit")

    expect(page.locator("#presence-now")).to_have_text("Available", timeout=20_000)
    expect(page.locator("#idle")).to_be_visible()
    expect(page.locator("#oncall")).to_be_hidden()
    call_id = stack.call_row(sid).id
    wrapped = stack.sql("select detail from call_events where call_id = :id and kind = 'wrap_up'", id=call_id)
    assert len(wrapped) == 1 and "advice_given" in str(wrapped[0].detail)
    stack.emulator.unregister_client(identity)
    tab.go("offline", "Offline")


def test_declining_with_d_passes_the_call_on(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("dev", display_name="Dev Shah")
    tab = console(DESKTOP)
    tab.log_in("dev")
    page = tab.page
    tab.go_available()

    sid = stack.emulator.place_call(CALLER, keys=["1", "1", "2"])
    expect(page.locator("#offer")).to_be_visible(timeout=20_000)
    expect(page.locator("#offer-need")).to_have_text("Alcohol, drugs or other addiction")
    page.keyboard.press("d")
    expect(page.locator("#offer")).to_be_hidden()
    expect(page.locator("#presence-now")).to_have_text("Available", timeout=20_000)
    # The caller keeps their place, and is not offered again to the handler who declined.
    expect(page.locator("#queue-rows tr[data-call-id]")).to_have_count(1)
    page.wait_for_timeout(2_000)
    expect(page.locator("#offer")).to_be_hidden()
    stack.emulator.hangup(sid)
    expect(page.locator("#queue-rows tr[data-call-id]")).to_have_count(0, timeout=20_000)
    tab.go("offline", "Offline")


def test_an_offer_that_overtakes_the_reply_to_available_stays_on_screen(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("ife", display_name="Ife Adeyemi")
    tab = console(DESKTOP)
    tab.log_in("ife")
    page = tab.page
    sid = stack.emulator.place_call(CALLER, keys=["1", "1", "1"])
    expect(page.locator("#queue-rows tr[data-call-id]")).to_have_count(1, timeout=20_000)

    # Going Available with a call waiting brings the offer over the socket at once. Hold the reply to
    # the status change (already answered by the server) until the offer has rung, as a slow network would.
    held: list[tuple[object, object]] = []
    page.route("**/api/me/status", lambda route: held.append((route, route.fetch())))
    page.click("button[data-status=available]")
    expect(page.locator("#offer")).to_be_visible(timeout=20_000)
    expect(page.locator("#presence-now")).to_have_text("Ringing")
    assert len(held) == 1
    route, reply = held[0]
    assert reply.json()["presence"] == "available"
    route.fulfill(response=reply)

    # The late "available" is older news than the offer: the call keeps ringing and can be taken.
    page.wait_for_timeout(500)
    expect(page.locator("#offer")).to_be_visible()
    expect(page.locator("#presence-now")).to_have_text("Ringing")
    expect(page.locator("button[data-status=available]")).to_be_disabled()
    page.keyboard.press("d")
    expect(page.locator("#offer")).to_be_hidden()
    expect(page.locator("#presence-now")).to_have_text("Available", timeout=20_000)
    page.unroute("**/api/me/status")
    stack.emulator.hangup(sid)
    tab.go("offline", "Offline")


def test_the_console_fits_a_tablet_and_the_supervisor_sees_the_line(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("tam", display_name="Tamsin Fairweather-Llewellyn")
    make_user("sue", role="supervisor", display_name="Sue Okonjo")
    caller = stack.emulator.place_call(CALLER, keys=["", "", ""])  # silence: queued, flagged for the handler

    tablet = console(TABLET)
    tablet.log_in("tam")
    expect(tablet.page.locator("#queue-rows tr[data-call-id]")).to_have_count(1, timeout=20_000)
    expect(tablet.page.locator("#queue-rows .badge-flag").first).to_have_text("Self-referral not confirmed")
    tablet.page.screenshot(path=str(SHOTS / "console-tablet.png"), full_page=True)
    assert tablet.overflow() == []

    supervisor = console(DESKTOP)
    supervisor.log_in("sue", landing="/supervisor")
    expect(supervisor.page.locator("#fig-waiting")).to_have_text("1")
    expect(supervisor.page.locator("#handlers")).to_contain_text("Tamsin Fairweather-Llewellyn")
    supervisor.page.screenshot(path=str(SHOTS / "supervisor.png"))
    assert supervisor.overflow() == []
    supervisor.page.set_viewport_size(TABLET)
    assert supervisor.overflow() == []

    stack.emulator.hangup(caller)
    expect(supervisor.page.locator("#fig-waiting")).to_have_text("0", timeout=20_000)
    expect(tablet.page.locator("#queue-rows tr[data-call-id]")).to_have_count(0)
