"""Reports over any period: `GET /api/reports/summary` (JSON), `GET /api/reports/summary.csv` (the same
figures, one per row) and `GET /api/reports/calls.csv` (one row per call).

All three take `from` and `to` as ISO dates (Europe/London days, inclusive, at most a year apart).
The figures are defined once, in helpline/reports.py. None holds anything personal. And
`GET /api/display/wallboard`: the wallboard's figures for a display-only wall screen (its token, no log-in).
"""

from __future__ import annotations

import csv
import io
from typing import Any, Iterator

from flask import Response, current_app, jsonify, request, stream_with_context
from flask_login import current_user
from pydantic import BaseModel, ConfigDict, Field

from .. import audit, display, reports
from ..auth import roles_required
from ..db import db
from ..errors import error
from ..models import utcnow
from . import Routes
from .openapi import date, documented
from .supervisor import period

routes = Routes()

RANGE = {"from": date("first day (Europe/London; default today)"), "to": date("last day, inclusive (default from)")}


class ReportSummary(BaseModel):
    """Volumes by day and hour, service level, abandonment, outcomes, needs and bookings over the period."""

    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from")
    to: str
    timezone: str
    totals: dict[str, Any]
    targets: dict[str, Any]
    definitions: dict[str, Any]
    channels: dict[str, int]
    by_day: list[dict[str, Any]]
    by_hour: list[dict[str, Any]]
    outcomes: dict[str, int]
    needs: dict[str, int]
    bookings: dict[str, Any]


@routes.get("/reports/summary")
@documented(responses={200: ReportSummary}, roles=("supervisor",), query=RANGE)
@roles_required("supervisor")
def summary() -> Response:
    """The period's figures as JSON (the report page draws its charts from this)."""
    return jsonify(reports.summary(db.session, period(), utcnow(), *reports.targets_of(current_app.config["HELPLINE"])))


@routes.get("/reports/summary.csv")
@documented(responses={200: "text/csv: section, key, figure, value: every figure of the summary"},
            roles=("supervisor",), query=RANGE)
@roles_required("supervisor")
def summary_csv() -> Response:
    """The summary's figures as CSV, one figure a row, so that each chart's numbers open in a spreadsheet."""
    chosen = period()
    report = reports.summary(db.session, chosen, utcnow(), *reports.targets_of(current_app.config["HELPLINE"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(("section", "key", "figure", "value"))
    for section, key, figure, value in reports.summary_rows(report):
        writer.writerow((section, key, figure, "" if value is None else value))
    filename = f"figures-{chosen.first.isoformat()}-to-{chosen.last.isoformat()}.csv"
    return Response(buffer.getvalue(), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@routes.get("/reports/calls.csv")
@documented(responses={200: "text/csv: one row per call (no personal data)"}, roles=("supervisor",), query=RANGE)
@roles_required("supervisor")
def calls_csv() -> Response:
    """Every call in the period as CSV, oldest first: times, need, flags, outcome, waits, handler id, booking."""
    chosen = period()
    # Exports are audited (what range, by whom), like any data leaving the service.
    audit.record(db.session, current_user, "reports.export", None, None, first=chosen.first.isoformat(),
                 last=chosen.last.isoformat())
    db.session.commit()

    def lines() -> Iterator[str]:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=reports.CSV_COLUMNS, lineterminator="\r\n")
        writer.writeheader()
        for number, row in enumerate(reports.call_rows(db.session, chosen), start=1):
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
            if number % 200 == 0:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
        yield buffer.getvalue()

    filename = f"calls-{chosen.first.isoformat()}-to-{chosen.last.isoformat()}.csv"
    return Response(stream_with_context(lines()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"', "Cache-Control": "no-store"})


@routes.get("/display/wallboard")
@documented(responses={200: "the wallboard's figures for a display-only screen: no call, handler or person"},
            roles=())
def display_wallboard() -> Response:
    """The wallboard's figures for a display-only wall screen, with its token as `Authorization: Bearer`.

    No log-in, so nothing times out; a revoked or unknown token gets 401. The figures leave out every
    call id, handler and name (reports.display_board).
    """
    header = request.headers.get("Authorization", "")
    token = header[7:].strip() if header[:7].lower() == "bearer " else None
    now = utcnow()
    screen = display.screen_for(db.session, token, now)
    if screen is None:
        refused = error(401, "display_token", "a valid display token is needed (Authorization: Bearer TOKEN); "
                                              "`helpline display create` makes one")
        refused.headers["WWW-Authenticate"] = 'Bearer realm="display"'
        return refused
    board = reports.display_board(reports.wallboard(db.session, now, **reports.wallboard_options(current_app.config["HELPLINE"])))
    db.session.commit()  # the screen's last_seen_at
    response = jsonify(board)
    response.headers["Cache-Control"] = "no-store"
    return response
