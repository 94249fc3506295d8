"""The public pages in headless chromium: axe-core finds nothing on any of them at phone and desktop
widths; the form works end to end with JavaScript off; and with it on, a request made on the website
appears in a handler's console and its call-back rings the person's phone."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from .console import DESKTOP, axe_violations
from .devphone import DevPhone

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PHONE = {"width": 375, "height": 740}
CALLER = "+447911123456"
SHOTS = Path("/tmp/public-pages")
PAGES = ["/", "/what-we-offer", "/confidentiality", "/self-help", "/contact-us", "/offline", "/self-referral",
         "/self-referral/someone-else", "/self-referral/not-eligible", "/self-referral/urgent-help"]


class Visitor:
    """A member of the public's browser tab, remembering script errors and every request it made."""

    def __init__(self, browser: Any, base_url: str, viewport: dict[str, int], javascript: bool = True):
        self.base_url = base_url
        self.context = browser.new_context(viewport=viewport, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requested: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("request", lambda request: self.requested.append(request.url))

    def go(self, path: str) -> None:
        self.page.goto(self.base_url + path)

    def choose(self, label: str) -> None:
        self.page.get_by_label(label, exact=True).check()

    def next(self, button: str = "Continue") -> None:
        self.page.get_by_role("button", name=button).click()
        self.page.wait_for_load_state()

    def fill_form(self, contact_by: str = "phone") -> None:
        """Answer every question, one page at a time, as a person would."""
        self.go("/self-referral")
        self.choose("My own health")
        self.next()
        self.choose("Yes, this describes me")
        self.next()
        self.choose("Alcohol, drugs or another addiction")
        self.next()
        self.choose("Yes, I am safe right now")
        self.next()
        if contact_by == "phone":
            self.choose("Phone call")
            self.page.fill("#phone", "07911 123456")
            self.next()
            self.choose("Any time you are open")
            self.next()
            self.page.check("#safe_for_voicemail-2")
            self.page.check("#safe_to_text-2")
            self.next()
        else:
            self.choose("Email")
            self.page.fill("#email", "quinn@example.org")
            self.next()
        self.page.fill("#preferred_name", "Quinn")
        self.next()
        self.page.fill("#message", "Drinking more since the complaint.")
        self.next()
        self.page.check("#consent")
        self.next()

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def visitors(browser: Any, stack: Any) -> Iterator[Any]:
    opened: list[Visitor] = []

    def open_one(viewport: dict[str, int] = DESKTOP, javascript: bool = True) -> Visitor:
        visitor = Visitor(browser, stack.service.url, viewport, javascript)
        opened.append(visitor)
        return visitor

    yield open_one
    errors = [error for visitor in opened for error in visitor.errors]
    for visitor in opened:
        visitor.close()
    assert not errors, errors


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_axe_finds_nothing_on_any_public_page(visitors: Any, stack: Any, viewport: dict[str, int]) -> None:
    from playwright.sync_api import expect

    visitor = visitors(viewport)
    SHOTS.mkdir(exist_ok=True)
    for path in PAGES:
        visitor.go(path)
        assert visitor.page.locator("#emergency-advice").count() >= 1, path
        assert axe_violations(visitor.page) == [], path
        name = (path.strip("/").replace("/", "-") or "home") + f"-{viewport['width']}.png"
        visitor.page.screenshot(path=str(SHOTS / name), full_page=True)
        # Nothing sideways on a phone.
        assert visitor.page.evaluate("document.documentElement.scrollWidth <= document.documentElement.clientWidth"), path
    # Every question page, and check your answers, with an error shown too.
    visitor.go("/self-referral")
    visitor.next()
    assert visitor.page.locator(".nhsuk-error-summary").is_visible()
    # The summary takes the focus, so that a screen reader reads the problem first.
    expect(visitor.page.locator(".nhsuk-error-summary")).to_be_focused()
    assert axe_violations(visitor.page) == []
    # The page with the error came with a 400, which chromium logs as a failed load: expected here.
    assert visitor.errors == ["Failed to load resource: the server responded with a status of 400 (BAD REQUEST)"]
    visitor.errors.clear()
    visitor.fill_form()
    assert "check-answers" in visitor.page.url
    assert axe_violations(visitor.page) == []
    visitor.page.screenshot(path=str(SHOTS / f"check-answers-{viewport['width']}.png"), full_page=True)
    assert all(url.startswith(stack.service.url) for url in visitor.requested), "a request left the service"


def test_the_form_works_with_javascript_off(visitors: Any, stack: Any) -> None:
    visitor = visitors(PHONE, javascript=False)
    visitor.fill_form(contact_by="email")
    assert "check-answers" in visitor.page.url
    assert visitor.page.get_by_text("quinn@example.org").is_visible()
    visitor.next("Send request")
    reference = visitor.page.locator("#reference").inner_text()
    assert reference.startswith("PH-")
    assert stack.sql("select count(*) as n from calls where channel = 'web' and call_sid = :sid",
                     sid=f"web-{reference}")[0].n == 1


def test_the_app_reads_its_information_pages_offline_and_never_the_form(visitors: Any, stack: Any) -> None:
    """Installed, the app keeps the information and self-help pages for reading with no connection; the
    form needs one, and says so rather than showing a browser error."""
    from playwright.sync_api import expect

    visitor = visitors(PHONE)
    visitor.go("/")
    visitor.page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    visitor.page.wait_for_function("navigator.serviceWorker.controller !== null || caches.has('helpline-public-v1')")
    visitor.page.wait_for_function(
        "caches.open('helpline-public-v1').then((c) => c.keys()).then((k) => k.length >= 6)", polling=200, timeout=15_000)
    visitor.context.set_offline(True)
    try:
        visitor.go("/self-help")
        expect(visitor.page.locator("h1")).to_contain_text("Self-help")
        expect(visitor.page.get_by_text("116 123").first).to_be_visible()
        visitor.go("/self-referral")
        expect(visitor.page.locator("h1")).to_have_text("You are offline")
    finally:
        visitor.context.set_offline(False)
    # Offline pages raise network errors in the console by design: they are not this test's failures.
    visitor.errors.clear()


def test_a_web_request_reaches_a_handler_and_rings_the_person_back(visitors: Any, console: Any, make_user: Any,
                                                                   stack: Any) -> None:
    from playwright.sync_api import expect

    from sqlalchemy import text

    # Requests sent by the other tests of this module would be offered first: close them.
    with stack.engine.begin() as connection:
        connection.execute(text("update queue_entries set state = 'closed' where state = 'waiting'"))
    make_user("wren", display_name="Wren Hale")
    tab = console(DESKTOP)
    tab.log_in("wren")
    identity = tab.softphone_ready()
    stack.emulator.register_client(identity, auto_answer=True)
    # The person answers when called back (left ringing, the call would give up within a fraction of a
    # second at the emulator's time scale, and the handler be free again before the console had shown it).
    stack.emulator.register_phone(CALLER, auto_answer=True)

    visitor = visitors(PHONE)
    visitor.fill_form()
    expect(visitor.page.get_by_text("Drinking more since the complaint.")).to_be_visible()
    visitor.next("Send request")
    expect(visitor.page.locator("#reference")).to_have_text(__import__("re").compile(r"^PH-"))
    # The app never kept the form's pages or anything typed.
    kept = visitor.page.evaluate(
        "caches.keys().then((names) => Promise.all(names.map((n) => caches.open(n).then((c) => c.keys()))))"
        ".then((lists) => lists.flat().map((r) => new URL(r.url).pathname))")
    assert not any("referral" in path or path.startswith("/api") for path in kept), kept

    # In the handler's queue, marked as a web request; going available, it is offered and accepted.
    expect(tab.page.locator("#queue-rows")).to_contain_text("(web request)", timeout=15_000)
    tab.page.click("button[data-status=available]")  # offered at once: the request is waiting
    expect(tab.page.locator("#accept")).to_be_visible(timeout=20_000)
    tab.page.click("#accept")
    # The call-back rings the person's phone, through the same path as a phone caller's call-back.
    stack.emulator.phone_wait_for(CALLER, "incoming", timeout=20)
    expect(tab.page.locator("#fc-web-message")).to_have_text("Drinking more since the complaint.", timeout=15_000)
    expect(tab.page.locator("#fc-web-name")).to_have_text("Quinn")
    # They hang up: the handler wraps up, the request still in front of them.
    expect(tab.page.locator("#oncall-title")).to_have_text("On a call", timeout=15_000)
    stack.emulator.hangup_phone(CALLER)
    expect(tab.page.locator("#oncall-title")).to_have_text("Call ended: wrap up", timeout=15_000)
    expect(tab.page.locator("#fc-web-message")).to_have_text("Drinking more since the complaint.")


def test_an_email_request_is_confirmed_and_answered_from_the_console(visitors: Any, console: Any, make_user: Any,
                                                                      stack: Any, browser: Any) -> None:
    """With no HELPLINE_SMTP_URL, the service's mail goes to the emulator's catcher: the dev phone shows it."""
    import re

    from playwright.sync_api import expect
    from sqlalchemy import text

    with stack.engine.begin() as connection:
        connection.execute(text("update queue_entries set state = 'closed' where state = 'waiting'"))
    make_user("ash", display_name="Ash Moor")
    tab = console(DESKTOP)
    tab.log_in("ash")
    tab.softphone_ready()

    visitor = visitors(PHONE)
    visitor.fill_form(contact_by="email")
    visitor.next("Send request")
    reference = visitor.page.locator("#reference").inner_text()
    confirmation = stack.emulator.wait_for_mail(lambda event: reference in event.get("subject", ""), 20)
    assert confirmation["to"] == ["quinn@example.org"] and "Drinking" not in confirmation["body"]

    tab.page.click("button[data-status=available]")
    expect(tab.page.locator("#offer-announce")).to_contain_text("Email request to answer", timeout=20_000)
    tab.page.click("#accept")
    expect(tab.page.locator("#fc-web-message")).to_have_text("Drinking more since the complaint.", timeout=15_000)
    tab.page.fill("#fc-web-reply-body", "Hello Quinn, we can talk on Thursday at 6pm.")
    tab.page.get_by_role("button", name="Send email").click()
    expect(tab.page.locator("#fc-web-reply-status")).to_have_text("Sent.")
    reply = stack.emulator.wait_for_mail(lambda event: "Thursday at 6pm" in event.get("body", ""), 20)
    assert reply["to"] == ["quinn@example.org"] and re.search(reference, reply["body"])

    # The dev phone lists both.
    devphone = DevPhone(browser, stack.emulator.base_url)
    try:
        expect(devphone.page.locator("#mailbox")).to_contain_text("Thursday at 6pm", timeout=15_000)
        expect(devphone.page.locator("#mailbox")).to_contain_text(f"Your request {reference}")
        assert not devphone.errors, devphone.errors
    finally:
        devphone.close()
