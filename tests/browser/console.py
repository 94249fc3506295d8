"""A console tab in chromium, and the few steps every browser test takes with one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

PASSWORD = "a long password for tests"
DESKTOP = {"width": 1280, "height": 720}
TABLET = {"width": 768, "height": 1024}
#: The emulator's browser client that rings for a handler.
IDENTITY = re.compile(r"^(handler|supervisor)-\d+$")
PRESENCE_WORDS = {"offline": "Offline", "available": "Available", "offered": "Ringing", "on_call": "On a call",
                  "wrap_up": "Wrapping up", "break": "On break"}


class Console:
    """One browser tab, remembering anything its page logged as an error."""

    def __init__(self, browser: Any, base_url: str, viewport: dict[str, int]):
        self.base_url = base_url
        # The emulator's signalling uses its own self-signed certificate, as a newcomer's browser is
        # told to trust once; these tabs trust it from the start.
        self.context = browser.new_context(viewport=viewport, ignore_https_errors=True)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.closed = False
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)

    def log_in(self, username: str, landing: str = "/console") -> None:
        """Log in through the form, land on the role's page and wait for the live connection."""
        from playwright.sync_api import expect

        self.page.goto(self.base_url + "/login")
        self.page.fill("#username", username)
        self.page.fill("#password", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.base_url + landing)
        expect(self.page.locator("#connection")).to_be_hidden(timeout=15_000)

    def go(self, status: str, words: str) -> None:
        """Choose Available, Break or Offline, and see the console say so."""
        from playwright.sync_api import expect

        self.page.click(f"button[data-status={status}]")
        expect(self.page.locator("#presence-now")).to_have_text(words)

    def softphone_ready(self) -> str:
        """Wait for the page's softphone (Twilio's Voice SDK) to register; returns its identity."""
        from playwright.sync_api import expect

        expect(self.page.locator("#softphone-text")).to_contain_text("Softphone ready", timeout=20_000)
        identity = self.page.evaluate("fetch('/api/voice/token').then((r) => r.json()).then((t) => t.identity)")
        assert IDENTITY.match(identity), identity
        return identity

    def go_available(self) -> str:
        """Choose Available once the softphone is ready; returns the softphone's client identity."""
        from playwright.sync_api import expect

        identity = self.softphone_ready()
        self.go("available", "Available")
        expect(self.page.locator("#idle-title")).to_have_text("Waiting for a call")
        return identity

    def api_presence(self) -> str:
        """The presence GET /api/me reports, in the console's words."""
        return PRESENCE_WORDS[self.page.evaluate("fetch('/api/me').then((r) => r.json()).then((me) => me.presence)")]

    def overflow(self) -> list[str]:
        """Visible elements that stick out past the right edge of the viewport (none, in a good layout)."""
        return self.page.evaluate(
            """() => {
              const width = document.documentElement.clientWidth;
              const out = [];
              if (document.documentElement.scrollWidth > width) out.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${width}`);
              for (const el of document.querySelectorAll("body *")) {
                const box = el.getBoundingClientRect();
                if (box.width && box.height && box.right > width + 0.5) out.push(`${el.tagName.toLowerCase()}#${el.id}.${el.className} ends at ${Math.round(box.right)}`);
              }
              return out;
            }"""
        )

    def close(self) -> None:
        """Close the tab (once)."""
        if not self.closed:
            self.closed = True
            self.context.close()


AXE = Path(__file__).parent / "vendor" / "axe.min.js"


def axe_violations(page: Any) -> list[str]:
    """What axe-core (vendored, injected through the DevTools protocol so no page CSP is loosened)
    finds against WCAG 2 A and AA: one line per rule, naming the elements."""
    page.evaluate(AXE.read_text())
    return page.evaluate(
        "axe.run(document, {runOnly: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}).then((r) => r.violations.map("
        "(v) => v.id + ': ' + v.nodes.map((n) => n.target.join(' ')).join(', ')))")
