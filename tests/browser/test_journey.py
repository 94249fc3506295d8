"""A first contact from end to end, in headless chromium against `helpline serve` and the Twilio
emulator, by keyboard where a handler or clinician would use one, with axe-core finding nothing on
each page: a call comes in and is accepted; the form starts from what the phone menu learnt; a PHQ-9
is scored and its answer on self-harm sends the handler to the risk screen; the caller names a
clinician to avoid; the search leaves out that clinician and everyone based where the
caller works; a slot is booked and the confirmation text reaches the caller's phone; partner services
are texted; the call is wrapped up with the outcome that followed; then the clinician sees the
booking and the PHQ-9 in words, records that the caller came, and discharges them.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from helpline.reference_data import load_demo_services

from .console import DESKTOP, axe_violations

LONDON = zoneinfo.ZoneInfo("Europe/London")

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CALLER = "+447911123456"
SHOTS = Path("/tmp")
LIVES_IN, WORKS_IN = "QWO", "QOP"


def keyboard_check(page, selector: str) -> None:  # type: ignore[no-untyped-def]
    """Choose a radio button or tick a box as a keyboard user does: focus it, press Space."""
    page.locator(selector).focus()
    page.keyboard.press("Space")


def test_a_first_contact_from_the_call_to_the_clinicians_discharge(stack, console, make_user):
    from playwright.sync_api import expect

    make_user("nadia", display_name="Nadia Brooks")
    make_user("rivers", role="clinician", display_name="Dr Robin Rivers")
    with Session(stack.engine) as session:
        load_demo_services(session, dt.date.today(), clinician_username="rivers")
        session.commit()
    # Someone to avoid: another clinician based in the locality searched, with slots of their own.
    avoided = stack.sql("select c.display_name from clinicians c where c.locality_code = :code and c.code != 'demo-rivers' "
                        "and exists (select 1 from availability_rules r where r.clinician_id = c.id) order by c.id",
                        code=LIVES_IN)[0].display_name

    tab = console(DESKTOP)
    tab.log_in("nadia")
    page = tab.page
    identity = tab.go_available()
    stack.emulator.register_client(identity, auto_answer=True)

    # -- the call comes in and is accepted from the keyboard
    sid = stack.emulator.place_call(CALLER, keys=["1", "1", "1"])
    expect(page.locator("#accept")).to_be_focused(timeout=20_000)
    page.keyboard.press("a")
    expect(page.locator("#oncall")).to_be_visible(timeout=20_000)

    # -- the form starts from what the phone menu learnt
    expect(page.locator("#fc")).to_be_visible(timeout=10_000)
    expect(page.locator("#fc-prefilled")).to_be_visible()
    expect(page.locator("input[name=about_self][value=true]")).to_be_checked()
    expect(page.locator("input[name=needs][value=mental_health]")).to_be_checked()
    expect(page.locator("#fc-phone")).to_have_value("07911 123456")

    # -- the handler confirms and adds the rest, by keyboard
    page.locator("#fc-name").focus()
    page.keyboard.type("Dr Jamie Walker")
    keyboard_check(page, "input[name=profession][value=doctor]")
    keyboard_check(page, "input[name=practice][value=working_in_england]")
    keyboard_check(page, "input[name=ok_to_text][value=true]")
    keyboard_check(page, "input[name=workplace_agreed][value=false]")
    keyboard_check(page, "input[name=consent_to_keep][value=true]")
    page.select_option("#fc-home", LIVES_IN)
    page.select_option("#fc-work", WORKS_IN)

    # A declared conflict: a name that matches nobody is refused in words beside the field ...
    page.locator("#fc-avoid-input").focus()
    page.keyboard.type("Dr Nobody At All")
    page.keyboard.press("Enter")
    expect(page.locator("#fc-avoid-error")).to_contain_text("choose one from the list")
    # ... and one from the list is kept.
    choice = page.evaluate("(name) => [...document.querySelectorAll('#fc-avoid-options option')].map((o) => o.value)"
                           ".find((v) => v.startsWith(name + ' ('))", avoided)
    page.locator("#fc-avoid-input").fill("")
    page.keyboard.type(choice)
    page.keyboard.press("Enter")
    expect(page.locator("#fc-avoid-list li")).to_have_count(1)
    expect(page.locator("#fc-avoid-list")).to_contain_text(avoided)
    expect(page.locator("#fc-avoid-error")).to_have_text("")
    keyboard_check(page, "input[name=triage][value=face_to_face]")
    page.locator("#fc-triage-reason").focus()
    page.keyboard.type("Low mood for months; wants to talk to someone face to face")
    expect(page.locator("#fc-saved")).to_contain_text("Saved", timeout=10_000)

    # -- a PHQ-9, by keyboard: a question left out is named beside it, and nothing is sent
    page.select_option("#fc-q-kind", "phq9")
    page.get_by_role("button", name="Start").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#fc-q-form-title")).to_be_focused()
    for number in range(1, 9):
        keyboard_check(page, f"#fc-q-panel input[name=q{number}][value='{1 if number < 5 else 0}']")
    page.get_by_role("button", name="Score the PHQ-9").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#fc-q-q9-error")).to_have_text("question 9 needs an answer")
    expect(page.locator("#fc-q-panel input[name=q9]").first).to_be_focused()
    assert axe_violations(page) == []
    # Thoughts of self-harm on several days: scored, supervisors alerted, and the risk screen is next.
    page.keyboard.press("ArrowRight")  # from "Not at all" to "Several days"
    expect(page.locator("#fc-q-panel input[name=q9][value='1']")).to_be_checked()
    page.get_by_role("button", name="Score the PHQ-9").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#fc-q-outcome")).to_contain_text("PHQ-9: 5 of 27, Mild. Thoughts of self-harm reported")
    expect(page.locator("#fc-risk-title")).to_be_focused()
    expect(page.locator("#fc-q-results li")).to_have_count(1)
    assert axe_violations(page) == []

    # -- searching where the caller works finds nobody: everyone based there is left out
    page.select_option("#fc-b-locality", WORKS_IN)
    page.locator("#fc-find").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#fc-b-note")).to_contain_text("NHS Greater Manchester ICB are left out", timeout=10_000)
    expect(page.locator("#fc-slots button")).to_have_count(0)

    # -- where they live: the clinician they asked to avoid is left out, the others offered
    page.select_option("#fc-b-locality", LIVES_IN)
    page.select_option("#fc-b-modality", "face_to_face")
    page.locator("#fc-find").focus()
    page.keyboard.press("Enter")
    rivers = page.locator("#fc-slots button[aria-label*='Dr Robin Rivers (demo)']")
    expect(rivers.first).to_be_visible(timeout=10_000)
    expect(page.locator("#fc-slots")).not_to_contain_text(avoided)

    # -- book by keyboard; focus lands on what was booked, and the text reaches the caller's phone
    label = rivers.first.get_attribute("aria-label")
    rivers.first.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#fc-booked-text")).to_be_focused(timeout=10_000)
    expect(page.locator("#fc-booked-text")).to_contain_text("Dr Robin Rivers (demo)")
    confirmation = stack.emulator.wait_for_message(to=CALLER, timeout=15)
    assert confirmation["body"].startswith("Your appointment is confirmed for") and "Walker" not in confirmation["body"]

    # -- partner services, with the mouse this time, texted with the caller's consent
    page.fill("#fc-sp-q", "money")
    page.click("#fc-sp-find")
    first_service = page.locator("#fc-sp-list input[type=checkbox]").first
    expect(first_service).to_be_visible(timeout=10_000)
    first_service.check()
    page.check("input[name=consent]")
    page.click("#fc-sp-send")
    expect(page.locator("#fc-sp-sent")).to_contain_text("Sent by text", timeout=10_000)
    signpost = stack.emulator.wait_for_message(lambda message: message["sid"] != confirmation["sid"], to=CALLER, timeout=15)
    assert "helpline" not in signpost["body"].lower()  # the caller did not allow the text to name it
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "journey-handler.png"), full_page=True)

    # -- the caller rings off; the wrap-up starts from what happened (booked), and Enter finishes it
    stack.emulator.hangup(sid)
    expect(page.locator("#wrapup")).to_be_visible(timeout=20_000)
    expect(page.locator("input[name=outcome][value=booked]")).to_be_checked()
    page.locator("#wrapup-submit").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#presence-now")).to_have_text("Available", timeout=20_000)
    stack.emulator.unregister_client(identity)
    tab.go("offline", "Offline")

    # -- the clinician: who they are, the patient and booking in words, the range that applies
    doctor = console(DESKTOP)
    doctor.log_in("rivers", landing="/clinician")
    cpage = doctor.page
    expect(cpage.locator("#whoami")).to_contain_text("Dr Robin Rivers (demo) · Psychiatrist · based in NHS West Yorkshire ICB")
    patient = cpage.locator("#patients tr").filter(has_text="Dr Jamie Walker")
    expect(patient).to_have_count(1, timeout=10_000)
    expect(patient).to_contain_text("NHS West Yorkshire ICB")
    expect(patient).to_contain_text("NHS Greater Manchester ICB")
    expect(patient).to_contain_text("Open")
    booking = cpage.locator("#bookings tr").filter(has_text="Dr Jamie Walker")
    expect(booking).to_contain_text("Booked")
    expect(booking).to_contain_text("Not yet")
    when = re.search(r"Book (.+) at (\d\d:\d\d)", label or "")
    assert when, label
    expect(booking).to_contain_text(when.group(2))
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", cpage.locator("#range-from").input_value())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", cpage.locator("#range-to").input_value())
    body = cpage.locator("main").inner_text()
    assert "QWO" not in body and "QOP" not in body and "working_in_england" not in body
    assert axe_violations(cpage) == []

    # The appointment's day comes: attendance is recorded from the keyboard.
    start, end = stack.sql("select starts_at, ends_at from bookings")[0]
    length = dt.datetime.fromisoformat(str(end)) - dt.datetime.fromisoformat(str(start))
    # Two hours ago, but never before today began in London: the clinician's bookings start at today.
    now = dt.datetime.now(dt.timezone.utc)
    today_began = dt.datetime.combine(now.astimezone(LONDON).date(), dt.time(), LONDON).astimezone(dt.timezone.utc)
    past = max(now - dt.timedelta(hours=2), today_began).replace(tzinfo=None)
    with stack.engine.begin() as connection:
        connection.execute(text("update bookings set starts_at = :s, held_start = :s, ends_at = :e"),
                           {"s": past.strftime("%Y-%m-%d %H:%M:%S.%f"), "e": (past + length).strftime("%Y-%m-%d %H:%M:%S.%f")})
    cpage.reload()
    attended = cpage.get_by_role("group", name=re.compile(r"^Attendance, Dr Jamie Walker")).get_by_role("button", name="Attended")
    attended.focus()
    cpage.keyboard.press("Space")
    expect(attended).to_have_attribute("aria-pressed", "true", timeout=10_000)

    # The record opens in words, and the discharge is refused in words for a date to come ...
    open_record = cpage.get_by_role("button", name="Open record of Dr Jamie Walker")
    open_record.focus()
    cpage.keyboard.press("Enter")
    expect(cpage.locator("#record-title")).to_be_focused(timeout=10_000)
    record = cpage.locator("#record-fields")
    expect(record).to_contain_text("Working in England")
    expect(record).to_contain_text("NHS Greater Manchester ICB")
    expect(record).to_contain_text("Routine appointment, face to face")
    expect(cpage.locator("#record-q-results li")).to_contain_text(re.compile(r"PHQ-9, .*: 5 of 27, Mild\. Thoughts of self-harm reported"))
    assert "QOP" not in record.inner_text() and avoided not in record.inner_text()
    tomorrow = (dt.date.today() + dt.timedelta(days=2)).isoformat()
    cpage.fill("#discharged-on", tomorrow)
    cpage.locator("#discharge-save").focus()
    cpage.keyboard.press("Enter")
    expect(cpage.locator("#discharged-on-error")).to_have_text("the discharge date cannot be in the future", timeout=10_000)
    expect(cpage.locator("#discharged-on")).to_have_attribute("aria-invalid", "true")
    # ... and recorded for today.
    cpage.fill("#discharged-on", dt.date.today().isoformat())
    cpage.locator("#discharge-save").focus()
    cpage.keyboard.press("Enter")
    expect(cpage.locator("#discharge-now")).to_contain_text("Discharged on", timeout=10_000)
    expect(cpage.locator("#discharge-now")).to_contain_text("kept until")
    expect(cpage.locator("#discharged-on-error")).to_have_text("")
    expect(patient).to_contain_text("Discharged")
    assert axe_violations(cpage) == []
    cpage.screenshot(path=str(SHOTS / "journey-clinician.png"), full_page=True)

    [stored] = stack.sql("select b.attendance, c.discharged_on from bookings b join contacts c on c.id = b.contact_id")
    assert stored.attendance == "attended" and str(stored.discharged_on) == dt.date.today().isoformat()
