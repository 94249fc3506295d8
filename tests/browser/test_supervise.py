"""The supervisor page's Listen, Coach, Barge and Stop in headless chromium, against `helpline serve` and
the Twilio emulator. The page's softphone module is replaced by a stand-in that is registered at once
(the emulator answers `client:supervisor-<id>` itself), so what is tested here is the page: its
pressed-state group, the mode in words, the keyboard, axe-core, and the participant at the emulator."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..test_e2e_routing import HandlerConsole
from ..test_supervision_modes import connected_call, eventually
from .console import DESKTOP

pytestmark = [pytest.mark.browser, pytest.mark.slow]

AXE = Path(__file__).parent / "vendor" / "axe.min.js"

#: A softphone that is ready at once and "in the call" as soon as the page has one: the page's logic
#: needs nothing more, and the emulator answers the supervisor's leg on its own.
STAND_IN = """
export class Softphone {
  constructor({ status, onChange }) { this.status = status; this.onChange = onChange; }
  async start() { this.status.textContent = "Softphone ready (stand-in)"; this.onChange(); }
  get ready() { return true; }
  get inCall() { return true; }
  get muted() { return false; }
  mute() {}
  hangup() {}
}
"""


def test_listen_coach_barge_and_stop_from_the_supervisor_page(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("vera", role="supervisor", display_name="Vera Supervisor")
    ann = HandlerConsole(stack, "annie")
    try:
        stack.emulator.register_client(f"client:{ann.me['softphone']}", auto_answer=True)
        assert ann.post("/api/me/status", {"status": "available"}).status_code == 200
        _caller, call_id = connected_call(stack, ann)

        tab = console(DESKTOP)
        page = tab.page
        page.route("**/console/static/softphone.js",
                   lambda route: route.fulfill(status=200, content_type="text/javascript", body=STAND_IN))
        tab.log_in("vera", landing="/supervisor")
        supervisor = page.evaluate("fetch('/api/me').then((r) => r.json()).then((me) => me.id)")
        stack.emulator.register_client(f"client:supervisor-{supervisor}", auto_answer=True)
        expect(page.locator("#softphone-status")).to_have_text("Softphone ready (stand-in)")
        group = page.get_by_role("group", name=f"call {call_id}")
        expect(group).to_be_visible(timeout=20_000)
        for name in ("Listen", "Coach", "Barge"):
            expect(group.get_by_role("button", name=name)).to_have_attribute("aria-pressed", "false")

        # Keyboard only: focus Listen and press Enter.
        group.get_by_role("button", name="Listen").focus()
        page.keyboard.press("Enter")
        expect(page.locator("#supervise-mode")).to_contain_text(f"Listening to call {call_id}", timeout=20_000)
        expect(group.get_by_role("button", name="Listen")).to_have_attribute("aria-pressed", "true")
        leg = page.evaluate(f"fetch('/api/calls/{call_id}/listen').then((r) => r.json()).then((s) => s.leg_sid)")

        def ours() -> dict:
            """The supervisor's participant as the emulator holds it."""
            room = next(r for r in stack.emulator.conferences() if r["name"] == f"call-{call_id}" and r["status"] != "completed")
            return next((p for p in room["participants"] if p["call_sid"] == leg), {})

        eventually(lambda: ours(), "the supervisor in the room")
        assert ours()["muted"] is True

        page.keyboard.press("Tab")  # Coach, the next in the group
        page.keyboard.press("Space")
        expect(group.get_by_role("button", name="Coach")).to_have_attribute("aria-pressed", "true")
        expect(group.get_by_role("button", name="Listen")).to_have_attribute("aria-pressed", "false")
        expect(page.locator("#supervise-mode")).to_contain_text("hears you, the caller does not")
        eventually(lambda: ours()["coaching"] is True and ours()["muted"] is False, "coaching at the emulator")

        group.get_by_role("button", name="Barge").click()
        expect(page.locator("#supervise-mode")).to_contain_text("both hear you")
        eventually(lambda: ours()["coaching"] is False and ours()["muted"] is False, "barging at the emulator")

        # axe-core evaluated in the page (through the DevTools protocol, so the page's CSP does not apply).
        page.evaluate(AXE.read_text())
        found = page.evaluate("axe.run(document, {runOnly: ['wcag2a', 'wcag2aa']}).then((r) => r.violations.map((v) => v.id + ': ' + v.nodes.map((n) => n.target.join(' ')).join(', ')))")
        assert found == [], found

        page.locator("#supervise-stop").click()
        expect(page.locator("#supervise-mode")).to_contain_text("Not on a call")
        eventually(lambda: not ours(), "the supervisor out of the room")
    finally:
        ann.close()

