"""The emulator's shared state: every call, queue, conference, device, message and alert.

`Emulator` is what the REST API, the control API and the calls themselves talk to. One
re-entrant lock guards all of it; webhook HTTP requests are always made with the lock released.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timezone
from typing import Any, Iterable

from .call import Call
from .config import EmulatorConfig
from .dispatch import OrderedDispatcher
from .events import EventLog
from .loop import LoopThread
from .media import SILENT, Hearing, MediaServer
from .models import Bridge, Conference, Endpoint, Message, Participant, Queue, QueueMember
from .signalling import SignallingHub, start_signalling
from .signals import ConferenceExit, ConferenceStarted, Dequeued
from .sids import iso, new_sid, rfc2822, utcnow
from .webhooks import ERROR_MESSAGES, WebhookError, WebhookSender

#: Finished calls kept for the REST and control APIs before the oldest are forgotten.
MAX_FINISHED_CALLS = 5000
#: Conference statusCallbackEvent words -> the StatusCallbackEvent values Twilio sends.
CONFERENCE_EVENTS = {"start": {"conference-start"}, "end": {"conference-end"}, "join": {"participant-join"},
                     "leave": {"participant-leave"}, "mute": {"participant-mute", "participant-unmute"},
                     "hold": {"participant-hold", "participant-unhold"}, "modify": {"participant-modify"}}
STATUS_CALLBACK_WARNING = 15003  # "Call Progress: Warning Response to Callback URL"


def endpoint_key(address: str) -> str:
    """Normalise a dialled address: "client:alice" stays, phone numbers lose spaces."""
    address = address.strip()
    if address.lower().startswith("client:"):
        return "client:" + address.split(":", 1)[1].strip()
    return "".join(address.split())


class Emulator:
    """A whole pretend Twilio account."""

    def __init__(self, config: EmulatorConfig):
        """Start empty; calls begin when the control or REST API asks."""
        self.config = config
        self.lock = threading.RLock()
        self.sender = WebhookSender(config.auth_token, config.webhook_timeout)
        self.dispatcher = OrderedDispatcher()
        self.calls: dict[str, Call] = {}
        self._finished: list[str] = []
        self.queues: dict[str, Queue] = {}
        self.conferences: dict[str, Conference] = {}
        self.endpoints: dict[str, Endpoint] = {}
        self.messages: dict[str, Message] = {}
        self.alerts = EventLog(limit=2000)
        self.outbox = EventLog(limit=2000)
        #: Email the service sent, caught by the local SMTP server (mailbox.py), when one is started.
        self.mailbox = EventLog(limit=500)
        self.mail_catcher: Any = None
        self.started_at = time.time()
        self.closed = False
        # Real time: the Voice SDK's signalling and the calls' audio, on one asyncio loop started on first use.
        self.realtime = LoopThread()
        self.media = MediaServer(self.realtime, self.hearing)
        self.signalling = SignallingHub(self, self.realtime, self.media)
        self.signal_url: str | None = None
        self._signal_runner: Any = None
        for address in config.auto_answer:
            if address != "*":
                self.endpoints[endpoint_key(address)] = Endpoint(endpoint_key(address), auto_answer=True)

    def close(self) -> None:
        """Hang up every call and stop background work."""
        with self.lock:
            self.closed = True
            live = [c for c in self.calls.values() if not c.finished]
        for call in live:
            call.request_hangup("emulator-shutdown")
        for call in live:
            if call.thread is not None:
                call.thread.join(timeout=2)
        self.dispatcher.flush(timeout=2)
        self.dispatcher.close()
        self.sender.close()
        self.media.shutdown()
        if self._signal_runner is not None:
            try:
                self.realtime.run(self._signal_runner.cleanup(), timeout=5)
            except Exception:  # closing down anyway
                pass
        self.realtime.stop()
        if self.mail_catcher is not None:
            self.mail_catcher.stop()

    def start_mail_catcher(self, host: str, port: int = 0) -> str:
        """Catch the service's email on an SMTP server at host:port (0 = any free port); returns host:port."""
        from .mailbox import MailCatcher

        self.mail_catcher = MailCatcher(self.mailbox, host, port)
        return self.mail_catcher.address

    def start_signalling(self, host: str, port: int, cert: str, key: str) -> str:
        """Speak the Voice SDK's signalling on wss://host:port/signal; returns that host:port."""
        self._signal_runner, bound = self.realtime.run(start_signalling(self.signalling, host, port, cert, key))
        # Load the WebRTC stack now, off the loop, so that the first softphone ring does not wait for it.
        threading.Thread(target=self.media.warm_up, name="emulator-media-import", daemon=True).start()
        self.signal_url = f"{'[' + host + ']' if ':' in host else host}:{bound}"
        return self.signal_url

    def hearing(self, sid: str) -> Hearing:
        """What the leg `sid` hears now, for the media mixer (see media.py)."""
        with self.lock:
            call = self.calls.get(sid)
            if call is None or call.finished:
                return SILENT
            participant = call.participant
            if participant is not None:
                conference = participant.conference
                if participant.hold or conference.status != "in-progress":
                    return Hearing(hold=True)
                heard = []
                for other in conference.participants.values():
                    if other is participant or other.muted or other.hold:
                        continue
                    # A coach is heard only by the participant they coach (Twilio's CallSidToCoach).
                    if other.coaching and other.call_sid_to_coach != sid:
                        continue
                    heard.append(other.call.sid)
                return Hearing(tuple(heard))
            bridge = call.bridge
            if bridge is not None and bridge.started_at is not None and not bridge.ended:
                return Hearing((bridge.other(call).sid,))
            if call.queue_member is not None:
                return Hearing(hold=True)
            return SILENT

    # ------------------------------------------------------------------ calls

    def register_call(self, call: Call) -> Call:
        """Make `call` visible to the APIs."""
        with self.lock:
            self.calls[call.sid] = call
        return call

    def call_finished(self, call: Call) -> None:
        """Remember a finished call, forgetting the oldest when too many are kept."""
        with self.lock:
            self._finished.append(call.sid)
            while len(self._finished) > MAX_FINISHED_CALLS:
                self.calls.pop(self._finished.pop(0), None)

    def get_call(self, sid: str) -> Call | None:
        """The call with `sid`, if known."""
        with self.lock:
            return self.calls.get(sid)

    def list_calls(self, **filters: str | None) -> list[Call]:
        """Calls, newest first, filtered on status/to/from/parent_call_sid like Twilio's list."""
        with self.lock:
            calls = list(self.calls.values())
        wanted = {k: v for k, v in filters.items() if v}
        result = []
        for call in reversed(calls):
            if "status" in wanted and call.status != wanted["status"]:
                continue
            if "to" in wanted and call.to != wanted["to"]:
                continue
            if "from_" in wanted and call.from_ != wanted["from_"]:
                continue
            if "parent_call_sid" in wanted and (call.parent is None or call.parent.sid != wanted["parent_call_sid"]):
                continue
            result.append(call)
        return result

    def place_inbound_call(self, from_: str, to: str | None = None, url: str | None = None,
                           method: str | None = None, status_callback: str | None = None,
                           script: Iterable[str] = ()) -> Call:
        """A person dials the helpline number: an inbound call to the configured Voice URL and status
        callback (or, for this call, `url` and `status_callback`). `script` holds the entries pressed
        (or said) at successive Gathers, queued before the call starts so that the first Gather has its own."""
        call = Call(self, direction="inbound", from_=from_, to=to or self.config.phone_number,
                    url=url or self.config.voice_url, method=method or self.config.voice_method,
                    status_callback=status_callback or self.config.status_callback,
                    status_callback_method=self.config.status_callback_method,
                    status_callback_events=self.config.status_callback_events)
        self.register_call(call)
        call.event("call.started", direction="inbound", **{"from": call.from_, "to": call.to})
        for entry in script:
            call.press(str(entry or ""), when="next-gather")
        call.start()
        return call

    def create_call(self, *, to: str, from_: str, url: str | None, method: str = "POST",
                    twiml_body: str | None = None, status_callback: str | None = None,
                    status_callback_method: str = "POST", status_callback_events: Iterable[str] = ("completed",),
                    timeout: float = 60.0, conference: tuple[str, dict] | None = None) -> Call:
        """An outbound call made through the REST API (or a conference participant)."""
        call = Call(self, direction="outbound-api", from_=from_, to=endpoint_key(to), url=url, method=method,
                    twiml_body=twiml_body, status_callback=status_callback,
                    status_callback_method=status_callback_method,
                    status_callback_events=tuple(status_callback_events), ring_timeout=timeout)
        call.conference_request = conference
        self.register_call(call)
        call.event("call.started", direction="outbound-api", **{"from": call.from_, "to": call.to})
        call.start()
        return call

    def end_passive(self, leg: Call, reason: str, final_status: str | None = None) -> None:
        """End a dialled leg that has no thread of its own (idempotent; ignores redirected legs)."""
        with self.lock:
            if leg.finished or not leg.passive:
                return
            if final_status and not leg.answered:
                leg.final_status = final_status
            leg.end_reason = leg.end_reason or reason
        leg.finish()

    # ------------------------------------------------------------------ devices

    def _auto_answers(self, key: str) -> bool:
        """True when configuration says `key` picks up by itself."""
        keys = {endpoint_key(a) for a in self.config.auto_answer}
        return key in keys or ("*" in keys and not key.startswith("client:"))

    def register(self, key: str, auto_answer: bool | None = None) -> Endpoint:
        """A dev phone page or test says "I am client X / phone N and can take calls"."""
        key = endpoint_key(key)
        with self.lock:
            endpoint = self.endpoints.get(key)
            if endpoint is None:
                endpoint = self.endpoints[key] = Endpoint(key)
            endpoint.registered = True
            if auto_answer is not None:
                endpoint.auto_answer = auto_answer
        endpoint.log.append("registered", key=key, auto_answer=endpoint.auto_answer)
        return endpoint

    def unregister(self, key: str) -> Endpoint | None:
        """The device goes offline: a call ringing it ends unanswered at once (there is nobody left to
        ring), and a later call to it rings unanswered. An SDK's ring is the signalling's to end."""
        key = endpoint_key(key)
        with self.lock:
            endpoint = self.endpoints.get(key)
            if endpoint is None:
                return None
            endpoint.registered = False
            leg = endpoint.current
            ringing = (leg is not None and not (leg.finished or leg.answered or leg.real_time or endpoint.auto_answer))
        endpoint.log.append("unregistered", key=key)
        if ringing:
            assert leg is not None
            leg.request_hangup("device-gone", final_status="no-answer")
        return endpoint

    def endpoint(self, key: str) -> Endpoint | None:
        """The device for `key`, if it ever registered."""
        with self.lock:
            return self.endpoints.get(endpoint_key(key))

    def ring(self, leg: Call) -> str:
        """Ring the device `leg.to`: "ringing"; "busy" when it is already on a call; "no-answer" for a
        browser client that nobody has registered."""
        key = endpoint_key(leg.to)
        with self.lock:
            endpoint = self.endpoints.get(key)
            if endpoint is None and self._auto_answers(key):
                endpoint = self.endpoints[key] = Endpoint(key, auto_answer=True)
            if endpoint is not None and endpoint.current is not None and not endpoint.current.finished:
                return "busy"
            if endpoint is not None and not (endpoint.registered or endpoint.auto_answer):
                endpoint = None  # nobody is there to pick up
            if endpoint is None and key.startswith("client:"):
                # As at Twilio: a client identity that nobody has registered is not found, and the
                # call ends unanswered at once. A phone number nobody picks up rings out.
                return "no-answer"
            if endpoint is not None:
                endpoint.current = leg
                leg.endpoint = endpoint
        leg.activity = "ringing"
        leg.set_status("ringing")
        if endpoint is not None:
            endpoint.log.append("incoming", call_sid=leg.sid, **{"from": leg.from_, "to": leg.to},
                                parent_call_sid=leg.parent.sid if leg.parent else None)
            if self.signalling.handles(endpoint):
                leg.real_time = True
                self.signalling.ring(endpoint, leg)  # a real Voice SDK answers (or not) over its socket
            elif endpoint.auto_answer:
                timer = threading.Timer(self.config.scaled(self.config.auto_answer_after), self._auto_answer,
                                        (endpoint, leg))
                timer.daemon = True
                timer.start()
        return "ringing"

    def _auto_answer(self, endpoint: Endpoint, leg: Call) -> None:
        """Pick up on behalf of an auto-answering device."""
        with self.lock:
            if endpoint.current is not leg or leg.finished:
                return
        leg.answer()
        endpoint.log.append("answered", call_sid=leg.sid, auto=True)

    def _ringing(self, key: str) -> tuple[Endpoint, Call] | None:
        """The device and its call while that call is still ringing; None when nothing rings."""
        endpoint = self.endpoint(key)
        if endpoint is None:
            return None
        with self.lock:
            leg = endpoint.current
            if leg is None or leg.finished or leg.answered:
                return None
        return endpoint, leg

    def answer(self, key: str) -> Call | None:
        """The device answers its ringing call; returns the call, or None when nothing rings."""
        ringing = self._ringing(key)
        if ringing is None:
            return None
        endpoint, leg = ringing
        leg.answer()
        endpoint.log.append("answered", call_sid=leg.sid)
        return leg

    def reject(self, key: str) -> Call | None:
        """The device declines its ringing call (the caller's Dial sees busy)."""
        ringing = self._ringing(key)
        if ringing is None:
            return None
        endpoint, leg = ringing
        endpoint.log.append("rejected", call_sid=leg.sid)
        leg.request_hangup("rejected", final_status="busy")
        return leg

    def device_hangup(self, key: str) -> Call | None:
        """The device hangs up whatever call it has (declines it if still ringing)."""
        endpoint = self.endpoint(key)
        if endpoint is None:
            return None
        with self.lock:
            leg = endpoint.current
        if leg is None or leg.finished:
            return None
        if not leg.answered:
            return self.reject(key)
        leg.request_hangup("callee-hung-up")
        return leg

    def release(self, call: Call) -> None:
        """Free the device a finished call was using, and its media."""
        with self.lock:
            endpoint = call.endpoint
            if endpoint is not None and endpoint.current is call:
                endpoint.current = None
        self.signalling.leg_ended(call)

    # ------------------------------------------------------------------ bridges

    def connect(self, bridge: Bridge) -> bool:
        """Connect the two legs of `bridge`; False if it was torn down first."""
        with self.lock:
            if bridge.ended or bridge.a.finished or bridge.b.finished:
                bridge.ended = True
                bridge.a.cv.notify_all()
                bridge.b.cv.notify_all()
                return False
            bridge.started_at = time.monotonic()
            bridge.a.bridge = bridge
            bridge.b.bridge = bridge
            bridge.a.cv.notify_all()
            bridge.b.cv.notify_all()
        bridge.a.event("bridged", with_sid=bridge.b.sid, party=bridge.b.party)
        bridge.b.event("bridged", with_sid=bridge.a.sid, party=bridge.a.party)
        return True

    def disconnect(self, bridge: Bridge, by: Call) -> None:
        """Tear down `bridge` (idempotent) and wake both legs."""
        with self.lock:
            if bridge.ended:
                return
            bridge.ended = True
            bridge.ended_by = by.sid
            for leg in (bridge.a, bridge.b):
                if leg.bridge is bridge:
                    leg.bridge = None
                leg.cv.notify_all()
            started = bridge.started_at is not None
        if started:
            bridge.a.event("unbridged", with_sid=bridge.b.sid, by=by.sid)
            bridge.b.event("unbridged", with_sid=bridge.a.sid, by=by.sid)

    # ------------------------------------------------------------------ queues

    def queue_by_name(self, name: str, create: bool = False) -> Queue | None:
        """The queue called `name`, created on demand when `create`."""
        with self.lock:
            for queue in self.queues.values():
                if queue.friendly_name == name:
                    return queue
            if not create:
                return None
            queue = Queue(self.config.account_sid, name)
            self.queues[queue.sid] = queue
            return queue

    def enqueue(self, call: Call, name: str) -> tuple[Queue, QueueMember | None]:
        """Put `call` at the back of queue `name`; no member when the queue is full."""
        with self.lock:
            queue = self.queue_by_name(name, create=True)
            if len(queue.members) >= queue.max_size:
                return queue, None
            member = QueueMember(call)
            queue.members.append(member)
            queue.date_updated = utcnow()
            call.queue_member = (queue, member)
            for dialer in queue.dialers:
                dialer.cv.notify_all()
            return queue, member

    def dequeue(self, queue: Queue, member: QueueMember) -> None:
        """Take `member` out of `queue` (idempotent), remembering its wait for AvgQueueTime."""
        with self.lock:
            if member in queue.members:
                queue.members.remove(member)
                queue.past_waits.append(member.wait_time())
                queue.date_updated = utcnow()
            call = member.call
            if call.queue_member is not None and call.queue_member[1] is member:
                call.queue_member = None

    def take_front(self, queue: Queue, dialer: Call, url: str | None, method: str) -> Bridge | None:
        """A `<Dial><Queue>` takes the first waiting caller: build the bridge and signal the caller."""
        with self.lock:
            while queue.members:
                member = queue.members[0]
                if member.call.finished or member.call._hangup is not None:
                    self.dequeue(queue, member)
                    continue
                self.dequeue(queue, member)
                bridge = Bridge(dialer, member.call)
                member.call.deliver(Dequeued(bridge, url, method))
                return bridge
            return None

    def dequeue_to_url(self, queue: Queue, call_sid: str, url: str, method: str) -> Call | None:
        """REST `Members/{sid}` update: send that waiting caller to `url`."""
        with self.lock:
            member = queue.member(call_sid)
            if member is None:
                return None
            call = member.call
        call.redirect(url, method, queue_result="redirected")
        return call

    # ------------------------------------------------------------------ conferences

    def conference_by_name(self, name: str) -> Conference | None:
        """The live (not completed) conference called `name`."""
        with self.lock:
            for conference in self.conferences.values():
                if conference.friendly_name == name and conference.status != "completed":
                    return conference
            return None

    def conference(self, key: str, create: bool = False) -> Conference | None:
        """A conference by SID or (live) friendly name; created by name when `create`."""
        with self.lock:
            if key in self.conferences:
                return self.conferences[key]
            found = self.conference_by_name(key)
            if found is None and create:
                found = Conference(self.config.account_sid, key)
                self.conferences[found.sid] = found
            return found

    def join_conference(self, call: Call, name: str, options: dict[str, Any]) -> Participant | None:
        """Add `call` to conference `name` (created on demand); None when the room is full."""
        with self.lock:
            conference = self.conference(name, create=True)
            if len(conference.participants) >= options.get("max_participants", 250):
                return None
            coach = options.get("coach")
            participant = Participant(
                call=call, conference=conference, muted=bool(options.get("muted")), coaching=bool(coach),
                call_sid_to_coach=coach or None,
                start_conference_on_enter=options.get("start_conference_on_enter", True),
                end_conference_on_exit=options.get("end_conference_on_exit", False), label=options.get("label"))
            conference.participants[call.sid] = participant
            conference.date_updated = utcnow()
            call.participant = participant
            if options.get("status_callback") and not conference.status_callback:
                conference.status_callback = options["status_callback"]
                conference.status_callback_method = options.get("status_callback_method", "POST")
                conference.status_callback_events = set(options.get("status_callback_events") or ())
            starting = participant.start_conference_on_enter and conference.status == "init"
            if starting:
                conference.status = "in-progress"
            self.conference_callback(conference, "participant-join", participant)
            if starting:
                self.conference_callback(conference, "conference-start", participant)
                for other in conference.participants.values():
                    if other is not participant:
                        other.call.deliver(ConferenceStarted())
        call.event("conference.joined", conference=name, conference_sid=conference.sid, status=conference.status,
                   muted=participant.muted, coaching=participant.coaching)
        return participant

    def leave_conference(self, participant: Participant, reason: str) -> None:
        """Remove a participant (idempotent); end the room if it was the last or endConferenceOnExit."""
        conference = participant.conference
        call = participant.call
        with self.lock:
            if conference.participants.get(call.sid) is not participant:
                return
            del conference.participants[call.sid]
            participant.status = "complete"
            participant.date_updated = utcnow()
            conference.date_updated = utcnow()
            if call.participant is participant:
                call.participant = None
            ending = conference.status != "completed" and (
                (participant.end_conference_on_exit and conference.status == "in-progress")
                or not conference.participants)
            if ending:
                conference.status = "completed"
                if conference.participants:
                    conference.reason_conference_ended = "participant-with-end-conference-on-exit-left"
                    conference.call_sid_ending_conference = call.sid
                else:
                    conference.reason_conference_ended = "last-participant-left"
                    conference.call_sid_ending_conference = call.sid
            # Queue the callbacks before anyone else can leave, so their order matches what happened.
            self.conference_callback(conference, "participant-leave", participant)
            if ending:
                self.conference_callback(conference, "conference-end", participant)
                for other in conference.participants.values():
                    other.call.deliver(ConferenceExit("conference-ended"))
        call.event("conference.left", conference=conference.friendly_name, conference_sid=conference.sid,
                   reason=reason)

    def update_participant(self, participant: Participant, **changes: Any) -> None:
        """Apply a REST participant update (Muted, Hold, Coaching, CallSidToCoach...)."""
        events = []
        with self.lock:
            for name in ("muted", "hold", "coaching", "call_sid_to_coach", "end_conference_on_exit", "label"):
                value = changes.get(name)
                if value is None or getattr(participant, name) == value:
                    continue
                setattr(participant, name, value)
                if name == "muted":
                    events.append("participant-mute" if value else "participant-unmute")
                elif name == "hold":
                    events.append("participant-hold" if value else "participant-unhold")
                else:
                    events.append("participant-modify")
            participant.date_updated = utcnow()
        call = participant.call
        for event in dict.fromkeys(events):
            call.event("conference." + event.split("-", 1)[1], conference=participant.conference.friendly_name)
            self.conference_callback(participant.conference, event, participant)
        if changes.get("hold") and changes.get("hold_url"):
            call.event("play", url=changes["hold_url"], loop=0, hold_music=True)
        if changes.get("announce_url"):
            call.event("announcement", url=changes["announce_url"])

    def kick(self, participant: Participant) -> None:
        """REST DELETE of a participant: the call leaves the conference and carries on after its Dial."""
        participant.call.deliver(ConferenceExit("kicked"))

    def end_conference(self, conference: Conference) -> None:
        """REST `Status=completed` on a conference: everyone leaves."""
        with self.lock:
            people = list(conference.participants.values())
        for participant in people:
            participant.call.deliver(ConferenceExit("conference-ended"))

    def conference_callback(self, conference: Conference, event: str, participant: Participant | None) -> None:
        """Send a conference status callback when the room subscribed to `event`."""
        with self.lock:
            if not conference.status_callback:
                return
            subscribed = set()
            for word in conference.status_callback_events:
                subscribed |= CONFERENCE_EVENTS.get(word, set())
            if event not in subscribed:
                return
            sequence = conference.callback_sequence
            conference.callback_sequence += 1
            params: dict[str, Any] = {
                "AccountSid": conference.account_sid, "ConferenceSid": conference.sid,
                "FriendlyName": conference.friendly_name, "StatusCallbackEvent": event,
                "SequenceNumber": sequence, "Timestamp": rfc2822(utcnow()),
            }
            if participant is not None:
                params.update({
                    "CallSid": participant.call.sid, "Muted": str(participant.muted).lower(),
                    "Hold": str(participant.hold).lower(), "Coaching": str(participant.coaching).lower(),
                    "EndConferenceOnExit": str(participant.end_conference_on_exit).lower(),
                    "StartConferenceOnEnter": str(participant.start_conference_on_enter).lower(),
                })
                if participant.label:
                    params["ParticipantLabel"] = participant.label
            if event == "conference-end":
                params["ReasonConferenceEnded"] = conference.reason_conference_ended
                params["CallSidEndingConference"] = conference.call_sid_ending_conference
            url, method = conference.status_callback, conference.status_callback_method
        self.dispatcher.submit(conference.sid, lambda: self._deliver_callback(url, method, params, None))

    # ------------------------------------------------------------------ callbacks, messages, alerts

    def send_status_callback(self, call: Call, params: dict[str, str], status: str, event: str,
                             sequence: int) -> None:
        """Queue a call-progress callback; the call's transcript notes when it was delivered."""
        url, method = call.status_callback, call.status_callback_method

        def job() -> None:
            code = self._deliver_callback(url, method, params, call)
            call.log.append("status_callback", status=status, event=event, sequence_number=sequence, url=url,
                            response_code=code)

        self.dispatcher.submit(call.sid, job)

    def _deliver_callback(self, url: str, method: str, params: dict[str, Any], call: Call | None) -> int | None:
        """POST a callback whose body Twilio ignores; alert on failure. Returns the HTTP status."""
        try:
            response = self.sender.send(url, method, params, expect_twiml=False)
        except WebhookError as err:
            if err.code == 11200:
                err.code, err.message = STATUS_CALLBACK_WARNING, "Call Progress: Warning Response to Callback URL"
                self.alert_webhook(err, call=call, level="warning")
            else:
                self.alert_webhook(err, call=call)
            return err.status_code
        return response.status_code

    def send_message(self, *, to: str, from_: str, body: str, status_callback: str | None) -> Message:
        """REST Messages create: the SMS goes to the outbox; callbacks report sent then delivered."""
        message = Message(self.config.account_sid, to=to, from_=from_, body=body, status_callback=status_callback)
        with self.lock:
            self.messages[message.sid] = message
        self.outbox.append("message", sid=message.sid, to=to, **{"from": from_}, body=body)

        def progress() -> None:
            for status in ("sent", "delivered"):
                with self.lock:
                    message.status = status
                    message.date_updated = utcnow()
                    if status == "sent":
                        message.date_sent = message.date_updated
                if status_callback:
                    self._deliver_callback(status_callback, "POST", {
                        "AccountSid": message.account_sid, "ApiVersion": "2010-04-01", "MessageSid": message.sid,
                        "SmsSid": message.sid, "MessageStatus": status, "SmsStatus": status,
                        "From": message.from_, "To": message.to}, None)

        self.dispatcher.submit(message.sid, progress)
        return message

    def alert(self, code: int, detail: str, *, call: Call | None = None, url: str | None = None,
              method: str | None = None, status_code: int | None = None, body: str | None = None,
              level: str = "error") -> dict[str, Any]:
        """Log a debugger alert (Twilio's Monitor > Errors), also shown in the call's transcript."""
        message = ERROR_MESSAGES.get(code) or ("Emulator" if code == 0 else "Error")
        if code == STATUS_CALLBACK_WARNING:
            message = "Call Progress: Warning Response to Callback URL"
        alert = self.alerts.append("alert", sid=new_sid("NO"), code=code, message=message, detail=detail,
                                   level=level, call_sid=call.sid if call else None, url=url, method=method,
                                   response_status=status_code, response_body=body,
                                   more_info=f"https://www.twilio.com/docs/errors/{code}" if code else None)
        if call is not None:
            call.event("alert", code=code, message=message, detail=detail, level=level, url=url)
        return alert

    def alert_webhook(self, err: WebhookError, call: Call | None, level: str = "error") -> dict[str, Any]:
        """Log a failed webhook request as its debugger alert."""
        return self.alert(err.code, err.detail, call=call, url=err.url, method=err.method,
                          status_code=err.status_code, body=err.body or None, level=level)

    def snapshot(self) -> dict[str, Any]:
        """Counts for the health endpoint."""
        with self.lock:
            live = sum(1 for c in self.calls.values() if not c.finished)
            return {"calls_live": live, "calls_total": len(self.calls), "queues": len(self.queues),
                    "conferences": sum(1 for c in self.conferences.values() if c.status != "completed"),
                    "messages": len(self.messages), "alerts": len(self.alerts.all()),
                    "started_at": iso(datetime.fromtimestamp(self.started_at, timezone.utc))}
