"""Twilio's 2010-04-01 REST API (the subset the helpline uses) at Twilio's own paths.

Point the official `twilio.rest.Client` at the emulator (`client.api.base_url = EMULATOR_URL`) and
its calls, queues, conferences and messages resources work unchanged.
"""

from __future__ import annotations

from typing import Any, Callable

from flask import Blueprint, Response, current_app, jsonify, request

from .call import Call
from .engine import Emulator
from .models import Conference, Message, Participant, Queue, QueueMember
from .sids import rfc2822

bp = Blueprint("twilio_rest", __name__, url_prefix="/2010-04-01/Accounts/<account_sid>")

API = "/2010-04-01"


def emulator() -> Emulator:
    """The engine bound to the running app."""
    return current_app.extensions["emulator"]


def twilio_error(status: int, code: int, message: str) -> Response:
    """An error in Twilio's JSON shape, which the twilio library turns into `TwilioRestException`."""
    response = jsonify({"code": code, "message": message, "more_info": f"https://www.twilio.com/docs/errors/{code}",
                        "status": status})
    response.status_code = status
    return response


def not_found(what: str) -> Response:
    """Twilio's 20404."""
    return twilio_error(404, 20404, f"The requested resource {request.path} was not found ({what})")


@bp.before_request
def authenticate() -> Response | None:
    """HTTP Basic auth with AccountSid:AuthToken, and the URL's account must be ours."""
    config = emulator().config
    auth = request.authorization
    if auth is None or auth.username != config.account_sid or auth.password != config.auth_token:
        response = twilio_error(401, 20003, "Authenticate")
        response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
        return response
    if request.view_args and request.view_args.get("account_sid") != config.account_sid:
        return not_found("account")
    return None


def form_bool(name: str) -> bool | None:
    """A Twilio boolean form field ("true"/"false"), or None when absent."""
    value = request.values.get(name)
    if value is None or value == "":
        return None
    return value.strip().lower() == "true"


def form_events(name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A multi-valued field (the twilio library repeats the key; people also space-separate)."""
    values = [word for item in request.values.getlist(name) for word in item.replace(",", " ").split()]
    return tuple(values) or default


def page(items: list[Any], key: str, render: Callable[[Any], dict]) -> Response:
    """A Twilio 2010-style page, honouring Page and PageSize."""
    try:
        size = max(1, min(1000, int(request.args.get("PageSize", 50))))
        number = max(0, int(request.args.get("Page", 0)))
    except ValueError:
        return twilio_error(400, 20001, "Invalid paging parameters")
    chunk = items[number * size:(number + 1) * size]
    args = {k: v for k, v in request.args.items() if k not in {"Page", "PageSize", "PageToken"}}
    query = "".join(f"&{k}={v}" for k, v in args.items())
    base = request.path
    next_uri = f"{base}?PageSize={size}&Page={number + 1}{query}" if len(items) > (number + 1) * size else None
    previous = f"{base}?PageSize={size}&Page={number - 1}{query}" if number > 0 else None
    return jsonify({
        key: [render(item) for item in chunk],
        "page": number, "page_size": size, "start": number * size, "end": number * size + max(0, len(chunk) - 1),
        "uri": request.full_path.rstrip("?"), "first_page_uri": f"{base}?PageSize={size}&Page=0{query}",
        "next_page_uri": next_uri, "previous_page_uri": previous,
    })


def account_uri(account_sid: str) -> str:
    """The account's resource prefix."""
    return f"{API}/Accounts/{account_sid}"


# ---------------------------------------------------------------------- representations

def call_json(call: Call) -> dict[str, Any]:
    """A Call resource as Twilio returns it."""
    with call.lock:
        uri = f"{account_uri(call.account_sid)}/Calls/{call.sid}.json"
        finished = call.finished
        return {
            "sid": call.sid, "account_sid": call.account_sid, "parent_call_sid": call.parent.sid if call.parent else None,
            "date_created": rfc2822(call.date_created), "date_updated": rfc2822(call.date_updated),
            "to": call.to, "to_formatted": call.to, "from": call.from_, "from_formatted": call.from_,
            "phone_number_sid": None, "status": call.status, "start_time": rfc2822(call.start_time),
            "end_time": rfc2822(call.end_time), "duration": str(call.duration()) if finished else None,
            "price": None, "price_unit": "USD", "direction": call.direction, "answered_by": call.answered_by(),
            "api_version": "2010-04-01", "forwarded_from": None, "group_sid": None, "caller_name": None,
            "queue_time": "0", "trunk_sid": None, "annotation": None, "uri": uri,
            "subresource_uris": {
                "notifications": uri.replace(".json", "/Notifications.json"),
                "recordings": uri.replace(".json", "/Recordings.json"),
                "events": uri.replace(".json", "/Events.json"),
            },
        }


def queue_json(queue: Queue) -> dict[str, Any]:
    """A Queue resource."""
    with emulator().lock:
        uri = f"{account_uri(queue.account_sid)}/Queues/{queue.sid}.json"
        return {
            "sid": queue.sid, "account_sid": queue.account_sid, "friendly_name": queue.friendly_name,
            "current_size": len(queue.members), "max_size": queue.max_size, "average_wait_time": queue.average_wait(),
            "date_created": rfc2822(queue.date_created), "date_updated": rfc2822(queue.date_updated), "uri": uri,
            "subresource_uris": {"members": uri.replace(".json", "/Members.json")},
        }


def member_json(queue: Queue, member: QueueMember) -> dict[str, Any]:
    """A queue Member resource."""
    with emulator().lock:
        return {
            "call_sid": member.call.sid, "queue_sid": queue.sid, "date_enqueued": rfc2822(member.date_enqueued),
            "position": queue.position_of(member.call) or 0, "wait_time": member.wait_time(),
            "uri": f"{account_uri(queue.account_sid)}/Queues/{queue.sid}/Members/{member.call.sid}.json",
        }


def conference_json(conference: Conference) -> dict[str, Any]:
    """A Conference resource."""
    with emulator().lock:
        uri = f"{account_uri(conference.account_sid)}/Conferences/{conference.sid}.json"
        return {
            "sid": conference.sid, "account_sid": conference.account_sid, "friendly_name": conference.friendly_name,
            "status": conference.status, "region": "us1", "api_version": "2010-04-01",
            "date_created": rfc2822(conference.date_created), "date_updated": rfc2822(conference.date_updated),
            "reason_conference_ended": conference.reason_conference_ended,
            "call_sid_ending_conference": conference.call_sid_ending_conference, "uri": uri,
            "subresource_uris": {"participants": uri.replace(".json", "/Participants.json"),
                                 "recordings": uri.replace(".json", "/Recordings.json")},
        }


def participant_json(participant: Participant | None, *, call: Call | None = None,
                     conference: Conference | None = None) -> dict[str, Any]:
    """A conference Participant resource (or a just-created one that is still ringing)."""
    with emulator().lock:
        if participant is not None:
            call, conference = participant.call, participant.conference
        assert call is not None and conference is not None
        status = participant.status if participant else {"queued": "queued", "initiated": "connecting",
                                                         "ringing": "ringing"}.get(call.status, "failed")
        options = call.conference_request[1] if call.conference_request else {}
        return {
            "account_sid": conference.account_sid, "call_sid": call.sid, "conference_sid": conference.sid,
            "label": participant.label if participant else options.get("label"),
            "call_sid_to_coach": participant.call_sid_to_coach if participant else options.get("coach"),
            "coaching": participant.coaching if participant else bool(options.get("coach")),
            "muted": participant.muted if participant else bool(options.get("muted")),
            "hold": participant.hold if participant else False,
            "start_conference_on_enter": participant.start_conference_on_enter if participant
            else options.get("start_conference_on_enter", True),
            "end_conference_on_exit": participant.end_conference_on_exit if participant
            else options.get("end_conference_on_exit", False),
            "status": status, "queue_time": "0",
            "date_created": rfc2822(participant.date_created if participant else call.date_created),
            "date_updated": rfc2822(participant.date_updated if participant else call.date_updated),
            "uri": f"{account_uri(conference.account_sid)}/Conferences/{conference.sid}/Participants/{call.sid}.json",
        }


def message_json(message: Message) -> dict[str, Any]:
    """A Message resource."""
    with emulator().lock:
        uri = f"{account_uri(message.account_sid)}/Messages/{message.sid}.json"
        return {
            "sid": message.sid, "account_sid": message.account_sid, "to": message.to, "from": message.from_,
            "body": message.body, "status": message.status, "direction": "outbound-api", "num_segments": "1",
            "num_media": "0", "price": None, "price_unit": "USD", "api_version": "2010-04-01", "error_code": None,
            "error_message": None, "messaging_service_sid": None, "date_created": rfc2822(message.date_created),
            "date_updated": rfc2822(message.date_updated), "date_sent": rfc2822(message.date_sent), "uri": uri,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        }


# ---------------------------------------------------------------------- calls

#: The values Twilio accepts for the Status filter of a list of Calls.
CALL_LIST_STATUSES = ("queued", "ringing", "in-progress", "canceled", "completed", "failed", "busy", "no-answer")


@bp.get("/Calls.json")
def list_calls(account_sid: str) -> Response:
    """List calls (filters: Status, To, From, ParentCallSid). A Status Twilio does not know is its
    400 (20001), not an empty list that would read as "no calls"."""
    status = request.args.get("Status")
    if status and status not in CALL_LIST_STATUSES:
        return twilio_error(400, 20001, f"Invalid Status: {status} is not one of {', '.join(CALL_LIST_STATUSES)}")
    calls = emulator().list_calls(status=request.args.get("Status"), to=request.args.get("To"),
                                  from_=request.args.get("From"), parent_call_sid=request.args.get("ParentCallSid"))
    return page(calls, "calls", call_json)


@bp.post("/Calls.json")
def create_call(account_sid: str) -> Response:
    """Make an outbound call (To, From, Url|Twiml, Method, StatusCallback*, Timeout, MachineDetection)."""
    form = request.values
    if not form.get("To"):
        return twilio_error(400, 21201, "No 'To' number is specified")
    if not form.get("From"):
        return twilio_error(400, 21213, "No 'From' number is specified")
    if not form.get("Url") and not form.get("Twiml"):
        return twilio_error(400, 21205, "Either Url or Twiml is required")
    method = (form.get("Method") or "POST").upper()
    if method not in {"GET", "POST"}:
        return twilio_error(400, 21209, "Method must be GET or POST")
    try:
        timeout = float(form.get("Timeout") or 60)
    except ValueError:
        return twilio_error(400, 21208, "Timeout must be a number")
    detection = form.get("MachineDetection")
    if detection and detection not in {"Enable", "DetectMessageEnd"}:
        return twilio_error(400, 21626, "MachineDetection must be Enable or DetectMessageEnd")
    engine = emulator()
    # Held while the call starts, so that its thread cannot reach the answer before it knows to detect.
    with engine.lock:
        call = engine.create_call(
            to=form["To"], from_=form["From"], url=form.get("Url"), method=method, twiml_body=form.get("Twiml"),
            status_callback=form.get("StatusCallback"),
            status_callback_method=(form.get("StatusCallbackMethod") or "POST").upper(),
            status_callback_events=form_events("StatusCallbackEvent", ("completed",)), timeout=min(600.0, timeout))
        call.machine_detection = bool(detection)
    response = jsonify(call_json(call))
    response.status_code = 201
    return response


def _find_call(call_sid: str) -> Call | None:
    """A call by SID."""
    return emulator().get_call(call_sid)


@bp.get("/Calls/<call_sid>.json")
def fetch_call(account_sid: str, call_sid: str) -> Response:
    """Fetch one call."""
    call = _find_call(call_sid)
    return jsonify(call_json(call)) if call else not_found("call")


@bp.post("/Calls/<call_sid>.json")
def update_call(account_sid: str, call_sid: str) -> Response:
    """Redirect a live call (Url/Method or Twiml) or end it (Status=completed|canceled)."""
    call = _find_call(call_sid)
    if call is None:
        return not_found("call")
    form = request.values
    status = form.get("Status")
    if status:
        if status not in {"completed", "canceled"}:
            return twilio_error(400, 21218, "Status must be completed or canceled")
        if not call.finished:
            if status == "canceled" and call.answered:
                pass  # Twilio only cancels calls that are queued or ringing
            else:
                call.request_hangup(f"api-{status}", final_status="canceled")
        return jsonify(call_json(call))
    if form.get("Url") or form.get("Twiml"):
        if call.finished:
            return twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
        method = (form.get("Method") or "POST").upper()
        call.redirect(form.get("Url"), method, form.get("Twiml"))
        return jsonify(call_json(call))
    return jsonify(call_json(call))


@bp.delete("/Calls/<call_sid>.json")
def delete_call(account_sid: str, call_sid: str) -> Response:
    """Delete a finished call's record."""
    engine = emulator()
    call = _find_call(call_sid)
    if call is None:
        return not_found("call")
    if not call.finished:
        return twilio_error(400, 21220, "Cannot delete a call that is in progress")
    with engine.lock:
        engine.calls.pop(call_sid, None)
    return Response(status=204)


# ---------------------------------------------------------------------- queues

def _find_queue(queue_sid: str) -> Queue | None:
    """A queue by SID."""
    with emulator().lock:
        return emulator().queues.get(queue_sid)


@bp.get("/Queues.json")
def list_queues(account_sid: str) -> Response:
    """List queues."""
    with emulator().lock:
        queues = list(emulator().queues.values())
    return page(queues, "queues", queue_json)


@bp.post("/Queues.json")
def create_queue(account_sid: str) -> Response:
    """Create a queue (FriendlyName, MaxSize)."""
    name = request.values.get("FriendlyName")
    if not name:
        return twilio_error(400, 20001, "Missing required parameter FriendlyName")
    engine = emulator()
    if engine.queue_by_name(name) is not None:
        return twilio_error(400, 22003, f"A queue with friendly name {name} already exists")
    queue = engine.queue_by_name(name, create=True)
    if request.values.get("MaxSize"):
        queue.max_size = int(request.values["MaxSize"])
    response = jsonify(queue_json(queue))
    response.status_code = 201
    return response


@bp.get("/Queues/<queue_sid>.json")
def fetch_queue(account_sid: str, queue_sid: str) -> Response:
    """Fetch a queue."""
    queue = _find_queue(queue_sid)
    return jsonify(queue_json(queue)) if queue else not_found("queue")


@bp.post("/Queues/<queue_sid>.json")
def update_queue(account_sid: str, queue_sid: str) -> Response:
    """Rename a queue or change its MaxSize."""
    queue = _find_queue(queue_sid)
    if queue is None:
        return not_found("queue")
    with emulator().lock:
        if request.values.get("FriendlyName"):
            queue.friendly_name = request.values["FriendlyName"]
        if request.values.get("MaxSize"):
            queue.max_size = int(request.values["MaxSize"])
    return jsonify(queue_json(queue))


@bp.delete("/Queues/<queue_sid>.json")
def delete_queue(account_sid: str, queue_sid: str) -> Response:
    """Delete an empty queue."""
    engine = emulator()
    queue = _find_queue(queue_sid)
    if queue is None:
        return not_found("queue")
    with engine.lock:
        if queue.members:
            return twilio_error(400, 22004, "Cannot delete a queue with members")
        engine.queues.pop(queue_sid, None)
    return Response(status=204)


@bp.get("/Queues/<queue_sid>/Members.json")
def list_members(account_sid: str, queue_sid: str) -> Response:
    """The callers waiting in a queue, front first."""
    queue = _find_queue(queue_sid)
    if queue is None:
        return not_found("queue")
    with emulator().lock:
        members = list(queue.members)
    return page(members, "queue_members", lambda m: member_json(queue, m))


@bp.get("/Queues/<queue_sid>/Members/<call_sid>.json")
def fetch_member(account_sid: str, queue_sid: str, call_sid: str) -> Response:
    """One waiting caller (`Front` = the first)."""
    queue = _find_queue(queue_sid)
    if queue is None:
        return not_found("queue")
    with emulator().lock:
        member = queue.member(call_sid)
    return jsonify(member_json(queue, member)) if member else not_found("member")


@bp.post("/Queues/<queue_sid>/Members/<call_sid>.json")
def dequeue_member(account_sid: str, queue_sid: str, call_sid: str) -> Response:
    """Dequeue a waiting caller to `Url` (its Enqueue action hears QueueResult=redirected)."""
    queue = _find_queue(queue_sid)
    if queue is None:
        return not_found("queue")
    url = request.values.get("Url")
    if not url:
        return twilio_error(400, 20001, "Missing required parameter Url")
    with emulator().lock:
        member = queue.member(call_sid)
        if member is None:
            return not_found("member")
        body = member_json(queue, member)
    emulator().dequeue_to_url(queue, member.call.sid, url, (request.values.get("Method") or "POST").upper())
    return jsonify(body)


# ---------------------------------------------------------------------- conferences

def _find_conference(key: str) -> Conference | None:
    """A conference by SID (or, as Twilio also accepts, the friendly name of a live one)."""
    return emulator().conference(key)


@bp.get("/Conferences.json")
def list_conferences(account_sid: str) -> Response:
    """List conferences (filters: FriendlyName, Status)."""
    with emulator().lock:
        conferences = list(reversed(list(emulator().conferences.values())))
    name, status = request.args.get("FriendlyName"), request.args.get("Status")
    conferences = [c for c in conferences if (not name or c.friendly_name == name)
                   and (not status or c.status == status)]
    return page(conferences, "conferences", conference_json)


@bp.get("/Conferences/<conference_sid>.json")
def fetch_conference(account_sid: str, conference_sid: str) -> Response:
    """Fetch a conference."""
    conference = _find_conference(conference_sid)
    return jsonify(conference_json(conference)) if conference else not_found("conference")


@bp.post("/Conferences/<conference_sid>.json")
def update_conference(account_sid: str, conference_sid: str) -> Response:
    """End a conference (Status=completed) or play an announcement."""
    conference = _find_conference(conference_sid)
    if conference is None:
        return not_found("conference")
    if request.values.get("Status") == "completed":
        emulator().end_conference(conference)
    if request.values.get("AnnounceUrl"):
        with emulator().lock:
            calls = [p.call for p in conference.participants.values()]
        for call in calls:
            call.event("announcement", url=request.values["AnnounceUrl"])
    return jsonify(conference_json(conference))


def _participant(conference: Conference, call_sid: str) -> Participant | None:
    """A participant of `conference` by call SID (or label)."""
    with emulator().lock:
        found = conference.participants.get(call_sid)
        if found is None:
            found = next((p for p in conference.participants.values() if p.label == call_sid), None)
        return found


@bp.get("/Conferences/<conference_sid>/Participants.json")
def list_participants(account_sid: str, conference_sid: str) -> Response:
    """List participants (filters: Muted, Hold, Coaching)."""
    conference = _find_conference(conference_sid)
    if conference is None:
        return not_found("conference")
    with emulator().lock:
        people = list(conference.participants.values())
    for name, attr in (("Muted", "muted"), ("Hold", "hold"), ("Coaching", "coaching")):
        wanted = form_bool(name)
        if wanted is not None:
            people = [p for p in people if getattr(p, attr) == wanted]
    return page(people, "participants", participant_json)


@bp.post("/Conferences/<conference_sid>/Participants.json")
def add_participant(account_sid: str, conference_sid: str) -> Response:
    """Dial `To` and put them in the conference (which may be named instead of a SID)."""
    form = request.values
    if not form.get("To") or not form.get("From"):
        return twilio_error(400, 21201, "To and From are required")
    engine = emulator()
    conference = engine.conference(conference_sid, create=not conference_sid.startswith("CF"))
    if conference is None:
        return not_found("conference")
    coach = form.get("CallSidToCoach") if form_bool("Coaching") else None
    wait_url = form.get("WaitUrl")
    options = {
        "muted": bool(form_bool("Muted")),
        "start_conference_on_enter": form_bool("StartConferenceOnEnter") is not False,
        "end_conference_on_exit": bool(form_bool("EndConferenceOnExit")),
        "wait_url": wait_url if wait_url is not None else None,
        "wait_method": (form.get("WaitMethod") or "POST").upper(),
        "coach": coach, "label": form.get("Label"),
        "max_participants": int(form.get("MaxParticipants") or 250),
        "status_callback": form.get("ConferenceStatusCallback"),
        "status_callback_method": (form.get("ConferenceStatusCallbackMethod") or "POST").upper(),
        "status_callback_events": set(form_events("ConferenceStatusCallbackEvent", ())),
    }
    try:
        timeout = float(form.get("Timeout") or 60)
    except ValueError:
        return twilio_error(400, 21208, "Timeout must be a number")
    call = engine.create_call(
        to=form["To"], from_=form["From"], url=None, status_callback=form.get("StatusCallback"),
        status_callback_method=(form.get("StatusCallbackMethod") or "POST").upper(),
        status_callback_events=form_events("StatusCallbackEvent", ("completed",)), timeout=timeout,
        conference=(conference.friendly_name, options))
    response = jsonify(participant_json(None, call=call, conference=conference))
    response.status_code = 201
    return response


@bp.get("/Conferences/<conference_sid>/Participants/<call_sid>.json")
def fetch_participant(account_sid: str, conference_sid: str, call_sid: str) -> Response:
    """Fetch a participant."""
    conference = _find_conference(conference_sid)
    participant = _participant(conference, call_sid) if conference else None
    return jsonify(participant_json(participant)) if participant else not_found("participant")


@bp.post("/Conferences/<conference_sid>/Participants/<call_sid>.json")
def update_participant(account_sid: str, conference_sid: str, call_sid: str) -> Response:
    """Mute, hold, coach or relabel a participant."""
    conference = _find_conference(conference_sid)
    participant = _participant(conference, call_sid) if conference else None
    if participant is None:
        return not_found("participant")
    emulator().update_participant(
        participant, muted=form_bool("Muted"), hold=form_bool("Hold"), coaching=form_bool("Coaching"),
        call_sid_to_coach=request.values.get("CallSidToCoach") or None,
        end_conference_on_exit=form_bool("EndConferenceOnExit"), label=request.values.get("Label") or None,
        hold_url=request.values.get("HoldUrl"), announce_url=request.values.get("AnnounceUrl"))
    return jsonify(participant_json(participant))


@bp.delete("/Conferences/<conference_sid>/Participants/<call_sid>.json")
def kick_participant(account_sid: str, conference_sid: str, call_sid: str) -> Response:
    """Remove a participant from the conference."""
    conference = _find_conference(conference_sid)
    participant = _participant(conference, call_sid) if conference else None
    if participant is None:
        return not_found("participant")
    emulator().kick(participant)
    return Response(status=204)


# ---------------------------------------------------------------------- messages

@bp.get("/Messages.json")
def list_messages(account_sid: str) -> Response:
    """List sent messages (filters: To, From)."""
    with emulator().lock:
        messages = list(reversed(list(emulator().messages.values())))
    to, from_ = request.args.get("To"), request.args.get("From")
    messages = [m for m in messages if (not to or m.to == to) and (not from_ or m.from_ == from_)]
    return page(messages, "messages", message_json)


@bp.post("/Messages.json")
def create_message(account_sid: str) -> Response:
    """Send an SMS into the outbox (To, From or MessagingServiceSid, Body, StatusCallback)."""
    form = request.values
    if not form.get("To"):
        return twilio_error(400, 21604, "A 'To' phone number is required")
    sender = form.get("From") or form.get("MessagingServiceSid")
    if not sender:
        return twilio_error(400, 21603, "A 'From' phone number is required")
    if not form.get("Body"):
        return twilio_error(400, 21602, "Message body is required")
    if len(form["Body"]) > 1600:
        return twilio_error(400, 21617, "The concatenated message body exceeds the 1600 character limit")
    message = emulator().send_message(to=form["To"], from_=sender, body=form["Body"],
                                      status_callback=form.get("StatusCallback"))
    response = jsonify(message_json(message))
    response.status_code = 201
    return response


@bp.get("/Messages/<message_sid>.json")
def fetch_message(account_sid: str, message_sid: str) -> Response:
    """Fetch one message."""
    with emulator().lock:
        message = emulator().messages.get(message_sid)
    return jsonify(message_json(message)) if message else not_found("message")
