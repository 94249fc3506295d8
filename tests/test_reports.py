"""The supervisors' figures (wallboard, report summary, CSV) against a day of calls built with known
waits, outcomes and bookings; and the date range checks of the report routes."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from helpline import reports
from helpline.db import db

from .booking_support import log_in
from .supervision_factories import DAY, NOW, at, known_day


@pytest.fixture
def day(app):
    with app.app_context():
        built = known_day(db.session)
        db.session.commit()
        ids = {name: record.id for name, record in built.calls.items()}
        handlers = {name: record.id for name, record in built.handlers.items()}
        users = {name: record.user_id for name, record in built.handlers.items()}
    return {"calls": ids, "handlers": handlers, "users": users}


TODAY = {
    "calls": 9, "reached_line": 7, "reached_queue": 7, "answered": 3, "abandoned": 1, "still_waiting": 2,
    "answered_within_20s": 1, "service_level_20s": round(1 / 6, 4),
    "answered_within_60s": 2, "service_level_60s": 0.4,
    "abandonment_rate": 0.2, "avg_answer_s": 48, "avg_handle_s": 360,
}


def test_the_wallboard_figures_for_the_known_day(app, day):
    with app.app_context():
        board = reports.wallboard(db.session, NOW)
    assert board["day"] == "2026-03-10"
    assert (board["waiting"], board["longest_wait_s"]) == (2, 40)
    assert (board["callbacks_due"], board["callbacks_later"]) == (1, 1)
    assert board["handlers"] == {"offline": 0, "available": 1, "offered": 0, "on_call": 1, "wrap_up": 0, "break": 1}
    assert board["on_calls"] == [{"handler_id": day["handlers"]["bob"], "call_id": day["calls"]["middling"], "presence": "on_call"}]
    assert board["today"] == TODAY
    [alert] = board["alerts"]
    assert alert == {"kind": "risk", "call_id": day["calls"]["quick"], "level": "immediate", "at": at(9, 3).isoformat(), "source": "risk_screen",
                     "handler": {"id": day["users"]["ann"], "name": alert["handler"]["name"]}}


def test_the_summary_over_the_day_and_a_longer_range(app, day):
    with app.app_context():
        one_day = reports.summary(db.session, reports.Period(DAY, DAY), NOW)
        week = reports.summary(db.session, reports.Period(DAY - dt.timedelta(days=3), DAY + dt.timedelta(days=3)), NOW)
    assert {k: v for k, v in one_day["totals"].items() if k != "service"} == TODAY
    assert [{k: v for k, v in item.items() if k != "service"} for item in one_day["by_day"]] == [
        {"date": "2026-03-10", "calls": 9, "reached_queue": 7, "answered": 3, "abandoned": 1}]
    hours = {item["hour"]: item for item in one_day["by_hour"] if item["calls"]}
    assert {hour: item["calls"] for hour, item in hours.items()} == {0: 1, 9: 1, 10: 1, 11: 1, 12: 1, 13: 1, 14: 3}
    assert hours[12]["abandoned"] == 1 and hours[0]["abandoned"] == 0  # the IVR hang-up never reached the queue
    assert one_day["outcomes"] == {"abandoned": 2, "answered": 3, "callback_requested": 1, "in_progress": 2, "third_party": 1}
    assert one_day["needs"] == {"addiction": 1, "mental_health": 5, "return_to_work": 1}
    assert one_day["bookings"] == {
        "total": 2, "cancelled": 1,
        "by_locality": [{"code": "QOP", "name": "Greater Manchester", "bookings": 1},
                        {"code": "QWO", "name": "West Yorkshire", "bookings": 1}],
        "by_profession": [{"profession": "psychiatrist", "bookings": 1}, {"profession": "therapist", "bookings": 1}],
    }
    assert len(week["by_day"]) == 7
    assert [item["calls"] for item in week["by_day"]] == [0, 0, 1, 9, 0, 0, 0]
    assert week["totals"]["calls"] == 10 and week["outcomes"]["out_of_hours"] == 1


def test_the_summary_route_and_its_date_checks(app, day):
    supervisor = log_in(app, "supervisor")
    body = supervisor.get("/api/reports/summary?from=2026-03-10&to=2026-03-10").get_json()
    assert body["from"] == body["to"] == "2026-03-10" and body["totals"]["calls"] == 9
    # Not a date: 400. Two dates that make no period to report (reversed, too long): 422.
    for query, words, status in (("from=2026-13-01", "is not a date", 400), ("from=2026-03-10&to=2026-03-09", "is after", 422),
                                 ("from=2025-01-01&to=2026-03-10", "at most 366", 422), ("to=yesterday", "is not a date", 400)):
        response = supervisor.get(f"/api/reports/summary?{query}")
        assert response.status_code == status, query
        assert response.get_json()["error"] == "bad_range" and words in response.get_json()["detail"]
    assert supervisor.get("/api/reports/summary?from=2025-03-10&to=2026-03-10").status_code == 200  # 366 days
    handler = log_in(app, "handler")
    assert handler.get("/api/reports/summary").status_code == 403
    assert handler.get("/api/reports/calls.csv").status_code == 403
    assert app.test_client().get("/api/reports/summary").status_code == 401


def test_the_csv_has_one_row_per_call_and_nothing_personal(app, day):
    supervisor = log_in(app, "supervisor")
    response = supervisor.get("/api/reports/calls.csv?from=2026-03-10&to=2026-03-10")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert 'filename="calls-2026-03-10-to-2026-03-10.csv"' in response.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0].keys()) == reports.CSV_COLUMNS
    by_id = {int(row["call_id"]): row for row in rows}
    assert sorted(by_id) == sorted(id_ for name, id_ in day["calls"].items() if name != "yesterday")
    quick = by_id[day["calls"]["quick"]]
    assert quick == {
        "call_id": str(day["calls"]["quick"]), "started_at": "2026-03-10T09:00:00+00:00", "ended_at": "2026-03-10T09:05:40+00:00",
        "need": "mental_health", "flags": "", "outcome": "answered", "outcome_step": "queue",
        "queued_at": "2026-03-10T09:00:30+00:00", "answered_at": "2026-03-10T09:00:40+00:00",
        "left_queue_at": "2026-03-10T09:00:40+00:00", "wait_s": "10", "handle_s": "360", "duration_s": "340",
        "handler_id": str(day["handlers"]["ann"]), "booked": "yes", "booking_locality": "QWO", "booking_profession": "psychiatrist",
    }
    assert by_id[day["calls"]["middling"]]["booking_locality"] == "QOP"  # a video booking: the clinician's locality
    assert by_id[day["calls"]["slow"]]["booked"] == "no"  # its booking was cancelled
    gave_up = by_id[day["calls"]["gave_up"]]
    assert (gave_up["outcome"], gave_up["wait_s"], gave_up["answered_at"], gave_up["handler_id"]) == ("abandoned", "30", "", "")
    assert by_id[day["calls"]["third_party"]]["queued_at"] == ""
    text = response.get_data(as_text=True)
    assert "CA0" not in text and "+44" not in text  # neither call SIDs nor numbers


def test_london_days_follow_the_clocks(app):
    summer = reports.Period(dt.date(2026, 7, 1), dt.date(2026, 7, 1))
    assert summer.start == dt.datetime(2026, 6, 30, 23, 0, tzinfo=dt.timezone.utc)
    assert summer.end == dt.datetime(2026, 7, 1, 23, 0, tzinfo=dt.timezone.utc)
    assert reports.today(dt.datetime(2026, 6, 30, 23, 30, tzinfo=dt.timezone.utc)).first == dt.date(2026, 7, 1)
