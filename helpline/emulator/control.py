"""The emulator's own JSON API: place calls, press keys, be a softphone, read the outbox and alerts.

The dev phone page, `helpline simulate-call`, `EmulatorClient` and the tests all drive calls
through these endpoints.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from .call import Call
from .engine import Emulator, endpoint_key
from .models import Endpoint

bp = Blueprint("emulator_control", __name__, url_prefix="/emulator")

#: Longest a long-poll may hold a request open.
MAX_WAIT_S = 30.0
KEYS = set("0123456789*#")


def emulator() -> Emulator:
    """The engine bound to the running app."""
    return current_app.extensions["emulator"]


def error(status: int, message: str, detail: Any = None) -> Response:
    """A JSON error: `{"error", "detail"}` with a 4xx status."""
    response = jsonify({"error": message, "detail": detail})
    response.status_code = status
    return response


def body() -> dict[str, Any]:
    """The JSON body (or form fields) of the request."""
    data = request.get_json(silent=True)
    if isinstance(data, dict):
        return data
    return request.form.to_dict()


def poll_args() -> tuple[int, float]:
    """`after` and `wait` query parameters for long polls."""
    try:
        after = int(request.args.get("after", 0))
        wait = min(MAX_WAIT_S, max(0.0, float(request.args.get("wait", 0))))
    except ValueError:
        after, wait = 0, 0.0
    return after, wait


@bp.get("/health")
def health() -> Response:
    """Liveness plus a few counts."""
    engine = emulator()
    return jsonify({"status": "ok", **engine.snapshot(), "signalling": engine.signal_url,
                    "smtp": engine.mail_catcher.address if engine.mail_catcher is not None else None})


@bp.get("/config")
def config() -> Response:
    """What the dev phone needs to know (never the auth token)."""
    engine = emulator()
    cfg = engine.config
    return jsonify({"account_sid": cfg.account_sid, "phone_number": cfg.phone_number, "voice_url": cfg.voice_url,
                    "status_callback": cfg.status_callback, "time_scale": cfg.time_scale,
                    "webhook_timeout": cfg.webhook_timeout, "status_callback_events": list(cfg.status_callback_events),
                    "signalling": engine.signal_url})


# ---------------------------------------------------------------------- calls

def call_or_404(sid: str) -> Call | None:
    """The call with `sid`, if any."""
    return emulator().get_call(sid)


@bp.post("/calls")
def place_call() -> Response:
    """Dial the helpline as a caller: {"from": "+4477..." | "anonymous", "to"?, "url"?, "status_callback"?}.

    `url` and `status_callback` stand for the configured Voice URL and status callback for this
    one call: a benchmark spreads its calls over several serving processes, as a proxy would.
    """
    data = body()
    from_ = str(data.get("from") or "").strip()
    if not from_:
        return error(400, "missing_from", "Give the caller ID in 'from' (or \"anonymous\").")
    engine = emulator()
    url = data.get("url") or engine.config.voice_url
    if not url:
        return error(400, "no_voice_url", "The emulator has no Voice URL; start it with --voice-url.")
    call = engine.place_inbound_call(from_, to=data.get("to") or None, url=url, method=data.get("method"),
                                     status_callback=data.get("status_callback") or None, script=data.get("script") or [])
    response = jsonify(call.describe())
    response.status_code = 201
    return response


@bp.get("/calls")
def list_calls() -> Response:
    """Calls, newest first (`?live=1` for unfinished ones only)."""
    calls = emulator().list_calls()
    if request.args.get("live") in {"1", "true"}:
        calls = [c for c in calls if not c.finished]
    return jsonify({"calls": [c.describe() for c in calls[:200]]})


@bp.get("/calls/<sid>")
def get_call(sid: str) -> Response:
    """A call's state and full transcript."""
    call = call_or_404(sid)
    if call is None:
        return error(404, "unknown_call", sid)
    return jsonify({**call.describe(), "events": call.log.all()})


@bp.get("/calls/<sid>/events")
def call_events(sid: str) -> Response:
    """Transcript events after `after`, waiting up to `wait` seconds for the first new one."""
    call = call_or_404(sid)
    if call is None:
        return error(404, "unknown_call", sid)
    after, wait = poll_args()
    events = call.log.since(after, wait)
    return jsonify({"events": events, "last_seq": events[-1]["seq"] if events else after, "status": call.status,
                    "finished": call.finished})


@bp.post("/calls/<sid>/digits")
def press(sid: str) -> Response:
    """Press keys now, or (`"when": "next-gather"`) at the next Gather."""
    call = call_or_404(sid)
    if call is None:
        return error(404, "unknown_call", sid)
    data = body()
    digits = str(data.get("digits") or "")
    when = data.get("when") or "now"
    if when not in {"now", "next-gather"}:
        return error(400, "bad_when", "'when' is 'now' or 'next-gather'")
    if set(digits) - KEYS:
        return error(400, "bad_digits", "Keys are 0-9, * and #")
    if not digits and when == "now":
        return error(400, "bad_digits", "No keys given")
    if call.finished:
        return error(409, "call_ended", call.status)
    accepted = call.press(digits, when=when)
    return jsonify({"accepted": accepted, "sid": sid})


@bp.post("/calls/<sid>/hangup")
def hangup(sid: str) -> Response:
    """The person on this leg hangs up."""
    call = call_or_404(sid)
    if call is None:
        return error(404, "unknown_call", sid)
    reason = "caller-hung-up" if call.direction == "inbound" else "callee-hung-up"
    call.request_hangup(reason, final_status="canceled")
    return jsonify({"sid": sid, "status": call.status})


@bp.post("/calls/<sid>/say")
def say(sid: str) -> Response:
    """The person on this leg talks (text stands in for audio)."""
    call = call_or_404(sid)
    if call is None:
        return error(404, "unknown_call", sid)
    text = str(body().get("text") or "").strip()
    if not text:
        return error(400, "missing_text", "Give the words in 'text'")
    return jsonify({"sid": sid, "heard_by": call.talk(text)})


@bp.post("/calls/<sid>/media")
def call_media(sid: str) -> Response:
    """The browser on this leg (the dev phone's caller) offers WebRTC audio: the emulator's SDP answer.

    The offer should carry its ICE candidates (wait for gathering to complete); the answer does.
    """
    call = call_or_404(sid)
    if call is None:
        return error(404, "unknown_call", sid)
    if call.finished:
        return error(409, "call_ended", sid)
    sdp = body().get("sdp")
    if not isinstance(sdp, str) or not sdp.startswith("v=0"):
        return error(400, "bad_sdp", "Give the browser's SDP offer in 'sdp'")
    try:
        answer = emulator().media.answer(sid, sdp)
    except Exception as exc:  # an offer aiortc cannot use: say so, the call goes on without audio
        return error(400, "bad_sdp", f"the offer could not be answered: {exc}")
    return jsonify({"sid": sid, "sdp": answer})


@bp.get("/calls/<sid>/media")
def call_media_stats(sid: str) -> Response:
    """Audio frames in and out of this leg, and whom it hears (404 when it has no audio)."""
    stats = emulator().media.stats(sid)
    if stats is None:
        return error(404, "no_media", sid)
    return jsonify({"sid": sid, **stats})


@bp.get("/signalling")
def signalling() -> Response:
    """The Voice SDK connections and what was said over them (newest last)."""
    hub = emulator().signalling
    return jsonify({"url": emulator().signal_url, "sessions": hub.describe(), "log": hub.log[-200:]})


@bp.post("/signalling/<identity>/drop")
def drop_signalling(identity: str) -> Response:
    """Close every SDK socket of `identity`, as a network fault would; the SDK reconnects by itself."""
    if emulator().signal_url is None:
        return error(409, "no_signalling", "this emulator does not speak the SDK's signalling")
    return jsonify({"identity": identity, "dropped": emulator().signalling.drop(identity)})


# ---------------------------------------------------------------------- devices

def _device_key(kind: str, name: str) -> str:
    """"client:<identity>" for clients, the E.164 number for phones."""
    return endpoint_key(("client:" + name) if kind == "clients" else name)


def _describe(endpoint: Endpoint | None, key: str) -> dict[str, Any]:
    """A device's JSON view, even before it registered."""
    if endpoint is None:
        return {"key": key, "registered": False, "auto_answer": False, "call_sid": None, "call_status": None}
    with emulator().lock:
        return endpoint.describe()


#: What Twilio's answering machine detection may report (AnsweredBy).
ANSWERED_BY = ("human", "machine_start", "machine_end_beep", "machine_end_silence", "machine_end_other", "fax", "unknown")


@bp.post("/<any(clients, phones):kind>/<name>/register")
def register(kind: str, name: str) -> Response:
    """Go online as a browser client identity or a phone number.

    A phone may say who picks it up, as answering machine detection reports it:
    `"answered_by": "machine_start"` makes it voicemail for calls that ask for MachineDetection.
    """
    data = body()
    answered_by = data.get("answered_by")
    if answered_by is not None:
        if kind != "phones" or answered_by not in ANSWERED_BY:
            return error(400, "bad_answered_by", f"'answered_by' is for phones, one of {', '.join(ANSWERED_BY)}")
        key = _device_key(kind, name)
        with emulator().lock:
            if answered_by == "human":
                emulator().config.answered_by.pop(key, None)
            else:
                emulator().config.answered_by[key] = answered_by
    auto = data.get("auto_answer")
    endpoint = emulator().register(_device_key(kind, name), auto_answer=None if auto is None else bool(auto))
    return jsonify({**_describe(endpoint, endpoint.key), "last_seq": endpoint.log.last_seq()})


@bp.post("/<any(clients, phones):kind>/<name>/unregister")
def unregister(kind: str, name: str) -> Response:
    """Go offline."""
    key = _device_key(kind, name)
    return jsonify(_describe(emulator().unregister(key), key))


@bp.get("/<any(clients, phones):kind>/<name>")
def device(kind: str, name: str) -> Response:
    """A device's state."""
    key = _device_key(kind, name)
    return jsonify(_describe(emulator().endpoint(key), key))


@bp.get("/<any(clients, phones):kind>/<name>/events")
def device_events(kind: str, name: str) -> Response:
    """The device's events (incoming, answered, said, heard, hangup...) after `after`."""
    key = _device_key(kind, name)
    endpoint = emulator().endpoint(key)
    if endpoint is None:
        return error(404, "not_registered", key)
    after, wait = poll_args()
    events = endpoint.log.since(after, wait)
    return jsonify({"events": events, "last_seq": events[-1]["seq"] if events else after,
                    **_describe(endpoint, key)})


@bp.post("/<any(clients, phones):kind>/<name>/<any(answer, reject, hangup):action>")
def device_action(kind: str, name: str, action: str) -> Response:
    """Answer, reject or hang up the device's call."""
    key = _device_key(kind, name)
    engine = emulator()
    if engine.endpoint(key) is None:
        return error(404, "not_registered", key)
    handler = {"answer": engine.answer, "reject": engine.reject, "hangup": engine.device_hangup}[action]
    call = handler(key)
    if call is None:
        return error(409, "no_call", f"{key} has no call to {action}")
    return jsonify({"call_sid": call.sid, "status": call.status})


def _device_call(key: str) -> Call | None:
    """The call a device is currently on."""
    endpoint = emulator().endpoint(key)
    if endpoint is None:
        return None
    with emulator().lock:
        return endpoint.current


@bp.post("/<any(clients, phones):kind>/<name>/say")
def device_say(kind: str, name: str) -> Response:
    """The device's user talks on its current call."""
    call = _device_call(_device_key(kind, name))
    if call is None or not call.answered:
        return error(409, "no_call", "Not on a connected call")
    text = str(body().get("text") or "").strip()
    if not text:
        return error(400, "missing_text", "Give the words in 'text'")
    return jsonify({"call_sid": call.sid, "heard_by": call.talk(text)})


@bp.post("/<any(clients, phones):kind>/<name>/digits")
def device_digits(kind: str, name: str) -> Response:
    """The device's user presses keys on its current call."""
    call = _device_call(_device_key(kind, name))
    if call is None or not call.answered:
        return error(409, "no_call", "Not on a connected call")
    digits = str(body().get("digits") or "")
    if not digits or set(digits) - KEYS:
        return error(400, "bad_digits", "Keys are 0-9, * and #")
    return jsonify({"call_sid": call.sid, "accepted": call.press(digits)})


# ---------------------------------------------------------------------- outbox, alerts, rooms

@bp.get("/messages")
def messages() -> Response:
    """The SMS outbox (everything sent through the Messages API)."""
    after, wait = poll_args()
    events = emulator().outbox.since(after, wait)
    engine = emulator()
    with engine.lock:
        statuses = {sid: m.status for sid, m in engine.messages.items()}
    items = [{**e, "status": statuses.get(e["sid"], "unknown")} for e in events]
    return jsonify({"messages": items, "last_seq": items[-1]["seq"] if items else after})


@bp.get("/mail")
def mail() -> Response:
    """Email the service sent, as the mail catcher caught it (see mailbox.py)."""
    after, wait = poll_args()
    items = emulator().mailbox.since(after, wait)
    return jsonify({"mail": items, "last_seq": items[-1]["seq"] if items else after})


@bp.get("/alerts")
def alerts() -> Response:
    """The debugger log: webhook failures, TwiML errors and warnings."""
    after, wait = poll_args()
    items = emulator().alerts.since(after, wait)
    if request.args.get("call_sid"):
        items = [a for a in items if a.get("call_sid") == request.args["call_sid"]]
    return jsonify({"alerts": items, "last_seq": items[-1]["seq"] if items else after})


@bp.get("/queues")
def queues() -> Response:
    """Queues and who waits in them."""
    engine = emulator()
    with engine.lock:
        data = [{"sid": q.sid, "name": q.friendly_name, "size": len(q.members), "average_wait": q.average_wait(),
                 "members": [{"call_sid": m.call.sid, "from": m.call.from_, "wait_time": m.wait_time()}
                             for m in q.members]} for q in engine.queues.values()]
    return jsonify({"queues": data})


@bp.get("/conferences")
def conferences() -> Response:
    """Conferences and their participants."""
    engine = emulator()
    with engine.lock:
        data = [{"sid": c.sid, "name": c.friendly_name, "status": c.status,
                 "participants": [{"call_sid": p.call.sid, "party": p.call.party, "muted": p.muted, "hold": p.hold,
                                   "coaching": p.coaching} for p in c.participants.values()]}
                for c in engine.conferences.values()]
    return jsonify({"conferences": data})
