"""Settling calls whose final status callback never came, from what Twilio's REST API says.

Twilio retries a failed status callback only so often; a network fault or an outage on our side can
lose the `completed` for good. Such a call would stay "live" for ever: a caller still waiting on the
wallboard, a handler never released into wrap-up. The scheduler runs `reconcile_job` every few
minutes; it asks Twilio about calls with no end that are old or have been quiet, and settles each one
it finds finished exactly as the status callback would have (voice.py), noting on the timeline that
the end came from reconciliation.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .db import db, is_postgresql
from .events import announce
from .models import Call, CallEvent, WebhookReply, utcnow
from .twilio_rest import TwilioGateway, TwilioUnavailable, gateway
from .voice import FINAL

log = logging.getLogger(__name__)

#: A call this old with no end is always checked, however recently Twilio called us about it.
STALE_AFTER = dt.timedelta(hours=4)
#: A call without a webhook for this long is checked (a waiting caller's hold music calls us every minute).
QUIET_AFTER = dt.timedelta(minutes=30)
#: A call Twilio cannot tell us about this long after it started is closed here (it cannot still be live).
GIVE_UP_AFTER = dt.timedelta(hours=24)
#: Calls older than this are not looked at (it bounds the index range every run reads).
LOOKBACK = dt.timedelta(days=7)
#: Calls checked per run at most; the next run takes the rest.
BATCH = 200


@dataclass
class Result:
    """What one reconciliation pass did, by call id."""

    settled: list[int] = field(default_factory=list)
    live: list[int] = field(default_factory=list)
    unreachable: list[int] = field(default_factory=list)
    closed_unknown: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many calls went each way."""
        return {name: len(ids) for name, ids in vars(self).items()}


def candidates(session: Session, now: dt.datetime) -> list[tuple[int, str, dt.datetime]]:
    """Calls with no end that are older than STALE_AFTER or quiet for QUIET_AFTER: (id, sid, started_at).

    An index range on started_at, bounded by LOOKBACK; the last webhook comes from the stored replies
    (indexed by call SID), which every TwiML webhook writes.
    """
    last_webhook = (
        select(func.max(WebhookReply.created_at)).where(WebhookReply.call_sid == Call.call_sid).scalar_subquery()
    )
    rows = session.execute(
        select(Call.id, Call.call_sid, Call.started_at, last_webhook)
        .where(Call.started_at >= now - LOOKBACK, Call.started_at <= now - QUIET_AFTER, Call.ended_at.is_(None))
        .order_by(Call.started_at)
        .limit(BATCH)
    ).all()
    found = []
    for call_id, call_sid, started_at, last in rows:
        latest = max(started_at, last) if last is not None else started_at
        if started_at <= now - STALE_AFTER or latest <= now - QUIET_AFTER:
            found.append((call_id, call_sid, started_at))
    return found


def _duration(value: Any) -> int | None:
    text = str(value) if value is not None else ""
    return int(text) if text.isdigit() else None


def settle(session: Session, call_id: int, status: str, ended_at: dt.datetime, duration_s: int | None,
           now: dt.datetime) -> bool:
    """End the call as a final status callback would have; False if it has ended meanwhile.

    The row is re-read (locked on PostgreSQL; SQLite's write transaction already excludes others)
    so that a status callback arriving at the same moment and this never both settle it.
    """
    query = select(Call).where(Call.id == call_id).execution_options(populate_existing=True)
    if is_postgresql(session):
        query = query.with_for_update()
    call = session.scalar(query)
    if call is None or call.ended_at is not None or call.twilio_status in FINAL:
        return False
    call.twilio_status = status
    call.ended_at = ended_at
    if duration_s is not None:
        call.duration_s = duration_s
    session.add(CallEvent(call_id=call.id, kind="reconciled", at=now, step=call.step,
                          detail={"status": status, "duration_s": duration_s}))
    # The same consequences as the status callback's: the caller leaves the line (abandoned, if
    # nobody answered), and a handler on the call moves to wrap-up.
    current_app.extensions["helpline.ivr"].abandon(session, call, now)
    announce(session, "call_ended", call_id=call.id)
    return True


def reconcile(twilio: TwilioGateway, now: dt.datetime | None = None) -> Result:
    """One pass: ask Twilio about each candidate (outside any transaction), settle the finished ones."""
    now = now or utcnow()
    result = Result()
    with db.transaction() as session:
        found = candidates(session, now)
    for call_id, call_sid, started_at in found:
        try:
            info = twilio.fetch_call(call_sid)
        except TwilioUnavailable as exc:
            if started_at > now - GIVE_UP_AFTER:
                log.warning("could not reconcile call %s: %s", call_id, exc)
                result.unreachable.append(call_id)
                continue
            # Twilio has no record we can reach a day on: the call cannot still be going on.
            with db.transaction() as session:
                if settle(session, call_id, "unknown", now, None, now):
                    result.closed_unknown.append(call_id)
            continue
        status = str(info.get("status") or "")
        if status not in FINAL:
            result.live.append(call_id)
            continue
        end_time = info.get("end_time")
        ended_at = end_time if isinstance(end_time, dt.datetime) and end_time.tzinfo is not None else now
        with db.transaction() as session:
            if settle(session, call_id, status, ended_at, _duration(info.get("duration")), now):
                result.settled.append(call_id)
    return result


def reconcile_job() -> dict[str, int]:
    """The scheduler's job (run with the app's context): reconcile, unless Twilio is not configured."""
    twilio = gateway()
    if not twilio.configured:
        log.info("reconciling calls skipped: Twilio is not configured")
        return {}
    counts = reconcile(twilio).counts()
    if any(counts.values()):
        log.info("reconciled calls: %s", counts)
    return counts
