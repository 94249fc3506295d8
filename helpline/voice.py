"""Twilio's voice webhooks: the helpline number's Voice URL, its status callback, and the IVR's steps.

Views stay thin: they find the call, ask the interpreter (`ivr/engine.py`) what to say, and return
TwiML. Signatures are checked before any view runs; replies are stored so retries repeat nothing.
"""

from __future__ import annotations

import logging
import time
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, request
from sqlalchemy.exc import IntegrityError, OperationalError

from . import lifecycle
from .db import append, db, is_postgresql
from .deferred import keep_for_replay, received_at
from .errors import error, register_webhook_errors
from .events import announce
from .ivr import twiml
from .ivr.engine import APOLOGY, Interpreter
from .models import Call, CallEvent
from .webhooks import CALL_SID, check_twilio_request, idempotent_twiml

log = logging.getLogger(__name__)

bp = Blueprint("voice", __name__, url_prefix="/voice")
bp.before_request(check_twilio_request)

#: Twilio's call statuses in the order a call moves through them; the last five are final.
STATUS_RANK = {"queued": 0, "initiated": 1, "ringing": 2, "in-progress": 3, "answered": 3}
FINAL = ("completed", "busy", "failed", "no-answer", "canceled")
#: How many times a webhook that failed on our side is retried before the caller is simply queued.
MAX_RETRIES = 3
#: The most keys one menu's Gather takes (its own and those typed ahead), and the longest words kept.
MAX_KEYS = 8
MAX_SPEECH = 200
#: How many times a status callback is applied before it is kept for replay (deferred.py): Twilio
#: never retries it, so it is answered 204 and replayed in this process once the database answers
#: (and reconciliation with Twilio, every minute, settles the call if this process stops first).
STATUS_ATTEMPTS = 4
#: Webhooks Twilio fetches from inside the queue's waitUrl, where only hold TwiML may be answered.
WAITING = ("voice.queue_wait", "voice.queue_key")


def interpreter() -> Interpreter:
    """The app's IVR interpreter."""
    return current_app.extensions["helpline.ivr"]


def _call_or_start(call_sid: str, status: str | None = None, *, new: bool = False) -> Call:
    """The call record for a webhook, created if this is the first the service hears of the call
    (lifecycle.call_for_webhook: exactly one of racing webhooks makes it)."""
    return lifecycle.call_for_webhook(db.session, call_sid, status, new=new)


@bp.post("/incoming")
@idempotent_twiml
def incoming(call_sid: str) -> str:
    """A new call to the helpline number: open its record and play the first step."""
    call = _call_or_start(call_sid, request.form.get("CallStatus") or "ringing", new=True)
    if call.step is None:
        # Not started yet (a status callback may have made the record a moment ago).
        interpreter().log(db.session, call, "incoming", None)
        return interpreter().start(db.session, call, request.form)
    # A second, different request for a call we know: carry on where it is.
    return interpreter().enter(db.session, call, call.step, request.form)


@bp.post("/step/<name>")
@idempotent_twiml
def step(name: str, call_sid: str) -> str:
    """Twilio fetching a step by Redirect."""
    call = _call_or_start(call_sid)
    if name not in interpreter().flow.steps:
        # A step removed from the flow while this call was in it: go on from where the call is.
        name = call.step if call.step in interpreter().flow.steps else interpreter().flow.start
    elif not interpreter().may_redirect(call, name):
        # A redirect the call's own step did not send (a late or replayed one, from a step the call
        # has left): like a key, it only counts where the caller is. They hear where they are.
        log.info("ignored a redirect to step %s: the call is at %s", name, call.step)
        return interpreter().current(call, request.form)
    return interpreter().enter(db.session, call, name, request.form)


@bp.post("/step/<name>/keys")
@idempotent_twiml
def step_keys(name: str, call_sid: str) -> str:
    """The caller's key at a menu, or silence (no Digits)."""
    call = _call_or_start(call_sid)
    if name not in interpreter().flow.steps:
        return interpreter().enter(db.session, call, call.step or interpreter().flow.start, request.form)
    if name != call.step:
        # A key for a step the call has already left (a late request, or a replayed one with another
        # digit): keys only count where the caller is. They hear where they are; nothing changes.
        log.info("ignored a key for step %s: the call is at %s", name, call.step)
        return interpreter().current(call, request.form)
    attempt = request.args.get("attempt", "1")
    attempt_number = int(attempt) if attempt.isdigit() and 0 < int(attempt) < 10 else 1
    return interpreter().keys(db.session, call, name, attempt_number, _digits(), request.form, _speech())


def _digits() -> str:
    """The keys the caller pressed (one, or several typed ahead): Twilio's Digits, or the ones a
    retry of this request carries in its URL."""
    digits = request.form.get("Digits", "") or request.args.get("digits", "")
    return digits[:MAX_KEYS] if digits and all(key in "0123456789*#" for key in digits) else ""


def _speech() -> str:
    """What the caller said instead of pressing a key (Twilio's SpeechResult). Never carried into a
    retry's URL, where it could be logged: a caller whose words were lost is asked again."""
    return request.form.get("SpeechResult", "")[:MAX_SPEECH]


@bp.post("/queue/wait")
@idempotent_twiml
def queue_wait(call_sid: str) -> str:
    """Enqueue's waitUrl: what a waiting caller hears next.

    The waitUrl of a caller held through an outage carries when they were held and the key they had
    just pressed (`held`, `step`, `key`: see Interpreter.hold_in_outage); they go to the interpreter,
    which records the caller and puts them in line if the service has no place for them yet.
    """
    params = {**request.form.to_dict(), "held": request.args.get("held", ""),
              "held_step": request.args.get("step", ""), "held_key": request.args.get("key", "")}
    return interpreter().wait(db.session, _call_or_start(call_sid), params)


@bp.post("/queue/key")
@idempotent_twiml
def queue_key(call_sid: str) -> str:
    """A key pressed while on hold."""
    return interpreter().queue_key(db.session, _call_or_start(call_sid), request.form.get("Digits", ""), request.form)


@bp.post("/queue/left")
@idempotent_twiml
def queue_left(call_sid: str) -> str:
    """Enqueue's action: the caller left the Twilio queue (QueueResult says why)."""
    result = request.form.get("QueueResult", "")
    return interpreter().queue_left(db.session, _call_or_start(call_sid), result, request.form)


@bp.post("/status")
def status() -> Response:
    """Twilio's status callback. Applied in order: a late or repeated callback changes nothing.

    Twilio does not retry a status callback that fails, so a passing database fault (SQLite busy,
    a PostgreSQL connection dropped by a restart) is retried here rather than losing the call's end;
    a longer outage keeps the callback for replay (`unexpected`, deferred.py).
    """
    call_sid = request.form.get("CallSid", "")
    if not CALL_SID.match(call_sid):
        return error(400, "bad_call_sid", "CallSid must be a Twilio call SID")
    new_status = request.form.get("CallStatus", "")
    if new_status not in STATUS_RANK and new_status not in FINAL:
        return error(400, "bad_call_status", "CallStatus is not one Twilio sends")
    sequence_text = request.form.get("SequenceNumber", "")
    sequence = int(sequence_text) if sequence_text.isdigit() else None
    duration_text = request.form.get("CallDuration", "")
    for attempt in range(STATUS_ATTEMPTS):
        try:
            if new_status in FINAL:
                _apply_status(call_sid, new_status, sequence, duration_text)
            else:
                _record_progress(call_sid, new_status, sequence)
            return Response(status=204)
        except (OperationalError, IntegrityError) as exc:
            db.session.rollback()
            if attempt == STATUS_ATTEMPTS - 1:
                raise
            log.warning("status callback for a call hit a database fault (%s); trying again", exc.__class__.__name__)
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def _record_progress(call_sid: str, new_status: str, sequence: int | None) -> None:
    """Record a status callback that does not end the call; a stale or repeated one changes nothing.

    Three of a call's four callbacks are these, arriving with its first webhook, so they take one
    statement (lifecycle.status_progressed): a status never moves back or past a final one, and the
    sequence number only grows.
    """
    behind = [status for status, rank in STATUS_RANK.items() if rank <= STATUS_RANK[new_status]]
    lifecycle.status_progressed(db.session(), call_sid, new_status, sequence, behind)


def _apply_status(call_sid: str, new_status: str, sequence: int | None, duration_text: str) -> None:
    """Record a status callback that ends the call, and commit; a stale or repeated one changes nothing."""
    session = db.session
    call = _call_or_start(call_sid)
    current = call.twilio_status
    if current in FINAL:
        return
    if sequence is not None and sequence <= call.twilio_sequence:
        return
    # A final status outranks every other, so only a final one already there, or a later sequence
    # number, stops it (those that do not end the call go through `_record_progress`). A callback
    # replayed after an outage records the end at the moment it arrived.
    now = received_at()
    call.twilio_status = new_status
    if sequence is not None:
        call.twilio_sequence = sequence
    append(session, CallEvent, call_id=call.id, kind="status", step=call.step, detail={"status": new_status, "sequence": sequence})
    call.ended_at = now
    if duration_text.isdigit():
        call.duration_s = int(duration_text)
    interpreter().abandon(session, call, now)
    # Whoever holds the call (an offer of it, or the handler who was talking to them) is settled
    # after the commit, in a transaction of its own (router.init_app): on PostgreSQL a routing pass
    # in another process may offer the call between this transaction's reads and its commit. On
    # SQLite this transaction has held the one write lock since its first read, so nothing can come
    # between: it is settled here, and the transaction after the commit is saved.
    settled = not is_postgresql(session)
    if settled:
        lifecycle.call_ended(session, call.id, now, entry=call.queue_entry)
    announce(session, "call_ended", call_id=call.id, settled=settled)
    session.commit()


def unexpected(exc: Exception) -> Response:
    """Something failed on our side: keep the caller on the line and ask Twilio to try again.

    After a few tries the caller is put straight into the Twilio queue, where a handler can still
    reach them: a fault of ours must never cost a caller their call.
    """
    log.exception("voice webhook %s failed", request.path)
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the database is away; the caller must still get an answer
        log.warning("could not roll back after a failed voice webhook")
    if request.endpoint == "voice.status":
        # Twilio never retries a status callback: keep it, replay it here once the database answers.
        keep_for_replay()
        return Response(status=204)
    if request.endpoint in WAITING:
        # Inside the queue's waitUrl: Twilio asks again after this, and the caller keeps their place.
        return Response(interpreter().hold_music_in_outage(), mimetype="text/xml")
    tries = request.args.get("retry", "0")
    tries_done = int(tries) if tries.isdigit() else 0
    if tries_done >= MAX_RETRIES:
        # The database still cannot be written: hold the caller where we will hear of them again.
        pending_step = request.view_args.get("name") if request.endpoint == "voice.step_keys" and request.view_args else None
        body = interpreter().hold_in_outage(pending_step, _digits() or None)
        return Response(body, mimetype="text/xml")
    args = {**request.args, "retry": str(tries_done + 1)}
    if _digits():
        # A <Redirect> does not send Digits again: the keys the caller pressed travel in the URL.
        args["digits"] = _digits()
    body = twiml.retry_later(interpreter().voice, APOLOGY, f"{request.path}?{urlencode(args)}")
    return Response(body, mimetype="text/xml")


register_webhook_errors(bp, unexpected)
