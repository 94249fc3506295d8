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

from helpline.models import Booking, Call, CallEvent, Clinician, Contact, Locality, QueueEntry, Site

from ..processes import run_cli
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
        # A call-back asked for on the website: in the line, and in "Reached the line", without waiting in it live.
        web = call(session, at(14), outcome="callback_requested")
        web.channel = "web"
        session.add(QueueEntry(call_id=web.id, kind="callback", state="waiting", need="mental_health", placed_at=at(14)))
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


@pytest.fixture(scope="module")
def seeded(stack):  # type: ignore[no-untyped-def]
    SHOTS.mkdir(parents=True, exist_ok=True)
    seed(stack.engine)
    return stack


#: Anything on the wall screen cut off, spilling out of its tile, or off the screen (none, when it fits).
CLIPPED = """() => {
  const out = [];
  const width = window.innerWidth, height = window.innerHeight;
  if (document.documentElement.scrollHeight > height + 1) out.push(`page scrolls: ${document.documentElement.scrollHeight} > ${height}`);
  if (document.documentElement.scrollWidth > width + 1) out.push(`page scrolls sideways`);
  for (const el of document.querySelectorAll("#wallboard, #wallboard *")) {
    const box = el.getBoundingClientRect();
    if (!box.width || !box.height || el.closest(".sr-only")) continue;
    const name = `${el.tagName.toLowerCase()}#${el.id}.${el.className}`;
    if (box.right > width + 0.5 || box.bottom > height + 0.5) out.push(`${name} ends at ${Math.round(box.right)},${Math.round(box.bottom)}`);
    if (el.scrollWidth > el.clientWidth + 1 && el.clientWidth) out.push(`${name} is wider than its box: ${el.scrollWidth} > ${el.clientWidth}`);
    if (el.scrollHeight > el.clientHeight + 1 && el.clientHeight) out.push(`${name} is taller than its box: ${el.scrollHeight} > ${el.clientHeight}`);
    const tile = el.closest(".wb-tile");
    if (tile && tile !== el) {
      const outer = tile.getBoundingClientRect();
      if (box.right > outer.right + 0.5 || box.bottom > outer.bottom + 0.5) out.push(`${name} spills out of its tile`);
    }
  }
  return out;
}"""


def test_every_report_chart_is_drawn_with_its_table_and_the_presets_choose_the_period(seeded, console, make_user):
    from playwright.sync_api import expect

    stack = seeded
    make_user("rita", role="supervisor", display_name="Rita Supervisor")
    tab = console({"width": 1366, "height": 768})
    tab.log_in("rita", landing="/supervisor")
    page = tab.page
    page.goto(stack.service.url + "/supervisor/reports?from=2026-03-09&to=2026-03-10")
    expect(page.locator("#totals")).to_contain_text("Calls8", timeout=20_000)
    # Every call that reached the line, as the channels chart counts them: the web request too.
    expect(page.locator("#totals")).to_contain_text("Reached the line7")
    channels = page.evaluate("Chart.getChart(document.getElementById('chart-channels')).data.datasets[0].data")
    assert sum(channels) == 7, channels
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
    expect(page.locator("#chart-days-table tbody tr")).to_have_count(7)
    assert page.evaluate("Chart.getChart(document.getElementById('chart-days')).data.labels.length") == 7


def test_the_wallboard_fits_every_wall_screen_size_and_shows_service_levels(seeded, console, make_user):
    from playwright.sync_api import expect

    stack = seeded
    make_user("wally", role="supervisor", display_name="Wally Supervisor")
    tab = console(SIZES[0])
    tab.log_in("wally", landing="/supervisor")
    page = tab.page
    page.goto(stack.service.url + "/supervisor/wallboard")
    expect(page.locator("#connection")).to_be_hidden(timeout=15_000)
    expect(page.locator("#wb-definitions dt")).to_have_count(4, timeout=15_000)
    expect(page.locator("#wb-sl-answered-label")).to_have_text("Answered within 60 s (of answered)")
    expect(page.locator("#wb-sl-answered-target")).to_have_text("≥ 95%")
    # Nothing answered today (the seeded calls are on another day): no figure, said in words.
    expect(page.locator("#wb-sl-answered-status")).to_have_text("– No calls yet")
    for size in SIZES:
        page.set_viewport_size(size)
        page.wait_for_timeout(200)
        clipped = page.evaluate(CLIPPED)
        assert clipped == [], f"{size}: " + "\n".join(clipped)
        page.screenshot(path=str(SHOTS / f"wallboard-{size['width']}x{size['height']}.png"))
    assert axe_violations(page) == []
    # The widest figures a busy day can bring, drawn by the wall screen's own code, still fit.
    page.goto(stack.service.url + "/display")  # no token: it reads nothing, so nothing redraws over them
    page.evaluate(WORST_CASE)
    expect(page.locator("#wb-calls")).to_have_text("9999")
    for size in SIZES:
        page.set_viewport_size(size)
        page.wait_for_timeout(200)
        clipped = page.evaluate(CLIPPED)
        assert clipped == [], f"busiest, {size}: " + "\n".join(clipped)
        page.screenshot(path=str(SHOTS / f"wallboard-busiest-{size['width']}x{size['height']}.png"))


#: A wallboard body with every figure at its widest, drawn with wallboard.js.
WORST_CASE = """async () => {
  const { drawWall } = await import("/console/static/wallboard.js");
  const level = { answered_in_time: 1, answered_in_time_all: 1, abandoned_after: 0.999, callbacks_in_time: 0.888,
                  status: { answered_in_time: "green", answered_in_time_all: "amber", abandoned_after: "red", callbacks_in_time: "none" } };
  const definition = (label) => ({ label, target: 0.95, higher_is_better: true,
                                   definition: "Calls answered within 600 seconds, as a share of the calls answered. ".repeat(2) });
  drawWall({
    at: new Date().toISOString(), waiting: 999, longest_wait_s: 3599, callbacks_due: 999, callbacks_later: 999,
    handlers: { available: 99, on_call: 99, wrap_up: 0, offered: 0, break: 99, offline: 99 },
    today: { answered: 9999, calls: 9999 },
    alerts: [{ kind: "risk", level: "immediate", at: new Date().toISOString() }],
    expected_wait: { seconds: null },
    service_levels: { today: level, now: level, definitions: {
      answered_in_time: definition("Answered within 600 s (of answered)"),
      answered_in_time_all: definition("Answered within 600 s (of all)"),
      abandoned_after: definition("Abandoned after 300 s"), callbacks_in_time: definition("Call-backs within 60 min") } },
  });
  document.getElementById("wb-longest").textContent = "59:59";
}"""


def test_a_display_only_screen_reads_figures_without_a_log_in_until_revoked(seeded, browser):
    from playwright.sync_api import expect

    stack = seeded
    made = run_cli(["display", "create", "Test wall"], stack.env)
    assert made.returncode == 0, made.stderr
    address = made.stdout.split("open ")[1].split()[0]
    token = address.split("#token=")[1]
    screen_id = made.stdout.split()[1]
    context = browser.new_context(viewport=SIZES[2])
    try:
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{stack.service.url}/display#token={token}")
        expect(page.locator("#connection")).to_be_hidden(timeout=15_000)
        expect(page.locator("#wb-definitions dt")).to_have_count(4)
        expect(page.locator("#wb-waiting")).to_have_text("0")
        assert page.evaluate(CLIPPED) == []
        page.screenshot(path=str(SHOTS / "display-3840x2160.png"))
        # Nothing personal on the screen; and the screen is nobody logged in (no session to time out).
        assert "Supervisor" not in page.locator("body").inner_text()
        assert page.evaluate("fetch('/api/me').then((r) => r.status)") == 401
        assert axe_violations(page) == []
        revoked = run_cli(["display", "revoke", screen_id], stack.env)
        assert revoked.returncode == 0, revoked.stderr
        expect(page.locator("#connection")).to_contain_text("revoked", timeout=15_000)
        assert errors == []
    finally:
        context.close()


def test_focus_starts_at_the_heading_after_log_in_and_review_rows_open_with_space(seeded, console, make_user):
    from playwright.sync_api import expect

    stack = seeded
    make_user("vera", role="supervisor", display_name="Vera Supervisor")
    tab = console(SIZES[0])
    tab.log_in("vera", landing="/supervisor")
    page = tab.page
    # After log-in the focus is on the page's heading, not left on the body.
    assert page.evaluate("document.activeElement.tagName") == "H1"
    assert page.evaluate("document.activeElement.textContent") == "Live queue and handlers"
    # The live view shows the configured service levels the wallboard shows, with words for their standing.
    expect(page.locator("#fig-sl60-label")).to_have_text("Answered within 60 s (of answered), today", timeout=15_000)
    expect(page.locator("#fig-sl60-status")).to_have_text("– No calls yet")
    expect(page.locator("#fig-expected")).to_have_text("nobody on duty")
    assert axe_violations(page) == []
    page.screenshot(path=str(SHOTS / "supervisor-live.png"))
    page.goto(stack.service.url + "/supervisor/review")
    assert page.evaluate("document.activeElement.textContent") == "Call review"
    page.fill("#from", "2026-03-10")
    page.fill("#to", "2026-03-10")
    page.click("#filters button[type=submit]")
    rows = page.locator("#call-rows tr[data-call-id]")
    expect(rows).to_have_count(7, timeout=15_000)  # the day's six calls and its web request
    first = rows.first
    assert first.get_attribute("role") == "row" and first.get_attribute("aria-selected") == "false"
    first.focus()
    page.keyboard.press("ArrowDown")
    second = rows.nth(1)
    expect(second).to_be_focused()
    page.keyboard.press(" ")
    expect(second).to_have_attribute("aria-selected", "true")
    expect(page.locator("#story")).to_contain_text("Call")
    assert page.evaluate("window.scrollY") == 0  # Space opened the call rather than scrolling the page
    assert axe_violations(page) == []
