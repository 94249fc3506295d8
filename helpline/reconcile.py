"""Keeping the service's idea of which calls are live in step with Twilio's, from Twilio's REST API.

Twilio does not retry a status callback that failed, and while the database cannot be written the
IVR holds callers in Twilio's queue without a record (voice.py, Interpreter.hold_in_outage). So the
database can disagree with Twilio both ways, and nothing Twilio sends later would put it right:

* a caller Twilio holds in the queue whom the service has no place in line for would wait for ever;
* a call the service thinks live that Twilio has ended would keep its handler "on call", with no
  wrap-up, and its caller on the wallboard.

`reconcile` runs at start-up and every minute (the scheduler's `reconcile-calls` job, and a run each
time a scheduler takes the lease). It lists the calls to the helpline's number that Twilio has live
and the callers in its queue, puts in line, in the order Twilio queued them, every caller the
service has no place for (recording the call first if need be), and settles each call the service
thinks live that Twilio has not listed as live, with Twilio's own status and end time, exactly as
the status callback would have (voice.py), noting on the timeline that the end came from here.
When Twilio cannot list, the calls that are old or have been quiet are asked about one by one.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from flask import current_app
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from .db import append, db, is_postgresql
from .events import announce
from .models import Call, CallEvent, WebhookReply, utcnow
from .twilio_rest import NOT_FOUND, TwilioGateway, TwilioUnavailable, gateway
from .voice import FINAL

log = logging.getLogger(__name__)

#: A call this old with no end is always checked, however recently Twilio called us about it.
STALE_AFTER = dt.timedelta(hours=4)
#: When Twilio cannot list its live calls: a call without a webhook for this long is checked (a
#: waiting caller's hold music calls us every minute).
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
    #: Callers in Twilio's queue the service had no place in line for, now in line.
    adopted: list[int] = field(default_factory=list)
    #: Live calls the service had no record of, now recorded (their end will be too).
    recorded: list[int] = field(default_factory=list)

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
    append(session, CallEvent, call_id=call.id, kind="reconciled", at=now, step=call.step,
           detail={"status": status, "duration_s": duration_s})
    # The same consequences as the status callback's: the caller leaves the line (abandoned, if
    # nobody answered), and a handler on the call moves to wrap-up.
    current_app.extensions["helpline.ivr"].abandon(session, call, now)
    announce(session, "call_ended", call_id=call.id)
    return True


def open_calls(session: Session, now: dt.datetime, listed_at: dt.datetime) -> list[tuple[int, str, dt.datetime]]:
    """Every call with no end that the service heard of before Twilio's list was taken: (id, sid, started_at).

    All of them, not a batch: with a full line, calls that are live at Twilio (skipped without a
    request) would otherwise crowd out the ones that have ended.
    """
    return [tuple(row) for row in session.execute(  # type: ignore[misc]
        select(Call.id, Call.call_sid, Call.started_at)
        .where(Call.started_at >= now - LOOKBACK, Call.started_at < listed_at, Call.ended_at.is_(None))
        .order_by(Call.started_at)
    ).all()]


def _aware(value: Any, default: dt.datetime) -> dt.datetime:
    return value if isinstance(value, dt.datetime) and value.tzinfo is not None else default


def adopt(live: dict[str, dict[str, Any]], waiting: list[tuple[str, Any]], now: dt.datetime, result: Result) -> None:
    """Put in line every caller in Twilio's queue the service has no place for, front first, and
    record every live call it has never heard of (so that its end is recorded too).

    Each in a transaction of its own: a webhook about the same call may win the race to record it,
    and then this one's insert fails on the unique CallSid and changes nothing.
    """
    interpreter = current_app.extensions["helpline.ivr"]
    for call_sid, enqueued in waiting:
        info = live.get(call_sid, {})
        try:
            with db.transaction() as session:
                call = session.scalar(select(Call).options(joinedload(Call.queue_entry)).where(Call.call_sid == call_sid))
                if call is not None and (call.queue_entry is not None or call.ended_at is not None):
                    continue
                placed_at = _aware(enqueued, now)
                if call is None:
                    call = Call(call_sid=call_sid, started_at=min(_aware(info.get("start_time"), placed_at), placed_at),
                                twilio_status=str(info.get("status") or "in-progress"))
                    session.add(call)
                    session.flush()
                interpreter.adopt(session, call, placed_at, info.get("from"), source="reconcile")
                call_id = call.id
        except IntegrityError:
            log.info("a webhook recorded a queued caller while reconciliation did; it keeps that record")
            continue
        result.adopted.append(call_id)
    queued = {call_sid for call_sid, _enqueued in waiting}
    for call_sid, info in live.items():
        if call_sid in queued or info.get("status") != "in-progress":
            continue
        try:
            with db.transaction() as session:
                if session.scalar(select(Call.id).where(Call.call_sid == call_sid)) is not None:
                    continue
                call = Call(call_sid=call_sid, started_at=_aware(info.get("start_time"), now), twilio_status="in-progress")
                session.add(call)
                session.flush()
                append(session, CallEvent, call_id=call.id, kind="recorded_from_twilio", at=now, detail={"status": "in-progress"})
                call_id = call.id
        except IntegrityError:
            continue
        result.recorded.append(call_id)


def reconcile(twilio: TwilioGateway, now: dt.datetime | None = None) -> Result:
    """One pass: list what Twilio has live, adopt the callers it holds that we do not, then ask Twilio
    about each call we think live that it did not list (outside any transaction), and settle the
    finished ones. If Twilio cannot list, only the old or quiet calls are asked about."""
    now = now or utcnow()
    result = Result()
    listed_at = utcnow()
    try:
        live: dict[str, dict[str, Any]] | None = twilio.live_calls()
        waiting = twilio.queue_members(current_app.config["HELPLINE"].queue.name)
    except TwilioUnavailable as exc:
        log.warning("could not list Twilio's live calls (%s); checking the quiet ones one by one", exc)
        live, waiting = None, []
    if live is not None:
        adopt(live, waiting, now, result)
        with db.transaction() as session:
            found = []
            for call_id, call_sid, started_at in open_calls(session, now, listed_at):
                if call_sid in live:
                    result.live.append(call_id)
                else:
                    found.append((call_id, call_sid, started_at))
        found = found[:BATCH]
    else:
        with db.transaction() as session:
            found = candidates(session, now)
    for call_id, call_sid, started_at in found:
        try:
            info = twilio.fetch_call(call_sid)
        except TwilioUnavailable as exc:
            if live is not None and exc.code == NOT_FOUND:
                # Twilio answered, has no live call of that SID, and no record of one: it is over.
                with db.transaction() as session:
                    if settle(session, call_id, "unknown", now, None, now):
                        result.closed_unknown.append(call_id)
                continue
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
    """The scheduler's job (run with the app's context, every minute and whenever a scheduler takes
    the lease): reconcile, unless Twilio is not configured."""
    twilio = gateway()
    if not twilio.configured:
        log.info("reconciling calls skipped: Twilio is not configured")
        return {}
    counts = reconcile(twilio).counts()
    if any(counts.values()):
        log.info("reconciled calls: %s", counts)
    return counts
