"""One call leg and the TwiML interpreter that drives it.

A call with its own thread ("active") fetches and runs TwiML: inbound calls, REST-created calls and
conference participants added through the REST API. The child legs a `<Dial>` creates are
"passive": they have no thread and no TwiML of their own (unless a whisper `url` runs on them);
the parent's `<Dial>` drives them.

All shared state is guarded by the emulator's single re-entrant lock; every call waits on its own
condition variable built on that lock, so a state change wakes exactly the calls it concerns.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from xml.sax.saxutils import escape

from . import twiml
from .events import EventLog
from .models import Bridge, Participant, Queue, QueueMember
from .signals import (AppError, CallEnded, ConferenceExit, ConferenceStarted, Dequeued, LeaveQueue, Redirected,
                      Signal)
from .sids import new_sid, rfc2822, utcnow
from .twiml import CONTEXT_VERBS, SCHEMA_WARNING, UNSUPPORTED_VERBS, TwimlError, Verb
from .webhooks import WebhookError, resolve

if TYPE_CHECKING:
    from .engine import Emulator

#: What Twilio says when it cannot run the application's TwiML.
APPLICATION_ERROR_TEXT = "We are sorry, an application error has occurred. Goodbye."
#: Stand-in for Twilio's default hold music (its classical playlist).
DEFAULT_HOLD_MUSIC = "http://com.twilio.music.classical.s3.amazonaws.com/BusyStrings.mp3"
#: Speaking rate used to decide how long a <Say> "plays".
WORDS_PER_SECOND = 2.7
TERMINAL_STATUSES = {"completed", "busy", "failed", "no-answer", "canceled"}
#: CallStatus -> the StatusCallbackEvent name that subscribes to it.
STATUS_EVENT = {"initiated": "initiated", "ringing": "ringing", "in-progress": "answered", "completed": "completed",
                "busy": "completed", "failed": "completed", "no-answer": "completed", "canceled": "completed"}
DTMF_KEYS = set("0123456789*#w")
_NO_INPUT = object()
#: A scripted entry spoken rather than keyed: "say:my own health".
SAY_PREFIX = "say:"
#: A scripted entry keyed as soon as the Gather listens, barging in on its prompt: "barge:111".
BARGE_PREFIX = "barge:"
#: How long "auto" speechTimeout waits after the caller stops talking, as Twilio's own end-of-speech detection.
AUTO_SPEECH_TIMEOUT_S = 1.0
#: Twilio's warning for speechTimeout="auto" with the default speech model.
AUTO_WITH_DEFAULT_MODEL = 13335


@dataclass
class Fetch:
    """A document to load next: a URL with extra request parameters, or inline TwiML."""

    url: str | None
    method: str = "POST"
    params: dict[str, Any] = field(default_factory=dict)
    twiml: str | None = None
    purpose: str = "voice"


@dataclass
class GatherState:
    """What the current `<Gather>` accepts, so key presses and speech know where to go."""

    finish_on_key: str
    num_digits: int | None
    speech: bool
    dtmf: bool = True


class Call:
    """A call leg: its Twilio-visible state, transcript and (if active) its TwiML thread."""

    def __init__(self, emulator: "Emulator", *, direction: str, from_: str, to: str,
                 parent: "Call | None" = None, url: str | None = None, method: str = "POST",
                 twiml_body: str | None = None, status_callback: str | None = None,
                 status_callback_method: str = "POST", status_callback_events: tuple[str, ...] = ("completed",),
                 ring_timeout: float = 60.0, passive: bool = False):
        """Create the leg; nothing runs until `start()` (active legs) or the parent's Dial rings it."""
        self.emulator = emulator
        self.config = emulator.config
        self.lock = emulator.lock
        self.cv = threading.Condition(emulator.lock)
        self.sid = new_sid("CA")
        self.account_sid = emulator.config.account_sid
        self.direction = direction
        self.from_ = from_
        self.to = to
        self.parent = parent
        self.url = url
        self.method = (method or "POST").upper()
        self.twiml_body = twiml_body
        self.status_callback = status_callback
        self.status_callback_method = (status_callback_method or "POST").upper()
        self.status_callback_events = tuple(status_callback_events or ("completed",))
        self.ring_timeout = ring_timeout
        self.passive = passive
        # Rung on a real Voice SDK in a browser: a person answers in real time, so its ring is not scaled.
        self.real_time = False
        self.log = EventLog()
        self.status = "queued"
        self.date_created = utcnow()
        self.date_updated = self.date_created
        self.start_time = None
        self.end_time = None
        self.answered_at: float | None = None
        self.answered = False
        self.finished = False
        self.final_status: str | None = None
        self.end_reason: str | None = None
        self.activity = "starting"
        self.callback_sequence = 0
        # Signals delivered from other threads, checked by `_check()`.
        self._hangup: str | None = None
        self._redirect: Redirected | None = None
        self._signal: Signal | None = None
        # Keypad and speech state.
        self.dtmf: list[str] = []
        self.speech: str | None = None
        self.gather: GatherState | None = None
        self.scripted_inputs: deque = deque()
        self.hangup_on_star = False
        # What the call is attached to.
        self.endpoint = None
        self.bridge: Bridge | None = None
        self.queue_member: tuple[Queue, QueueMember] | None = None
        self.participant: Participant | None = None
        self.conference_request: tuple[str, dict] | None = None
        self.thread: threading.Thread | None = None
        self._ended_at: float | None = None
        # Wall-clock seconds spent in scaled waits (prompts, pauses, timeouts): turns wall time back into call time.
        self._scaled_wall = 0.0
        # REST MachineDetection: the answer's webhook says who picked up (AnsweredBy).
        self.machine_detection = False
        self._resume_with: Fetch | None = None

    # ------------------------------------------------------------------ description

    @property
    def party(self) -> str:
        """Who is on the far end of this leg: the caller for inbound calls, else the dialled party."""
        return self.from_ if self.direction == "inbound" else self.to

    def duration(self) -> int:
        """Whole seconds since the call was answered (unscaled call time)."""
        if self.answered_at is None:
            return 0
        end = self._ended_at if self.finished else time.monotonic()
        return int((end - self.answered_at) / self.config.time_scale)

    def describe(self) -> dict[str, Any]:
        """State for the control API (the transcript is added by the caller)."""
        with self.lock:
            queue = self.queue_member[0].friendly_name if self.queue_member else None
            position = self.queue_member[0].position_of(self) if self.queue_member else None
            bridged = self.bridge.other(self).sid if self.bridge and self.bridge.started_at else None
            conference = self.participant.conference.friendly_name if self.participant else None
            return {
                "sid": self.sid,
                "from": self.from_,
                "to": self.to,
                "direction": self.direction,
                "parent_call_sid": self.parent.sid if self.parent else None,
                "status": self.status,
                "activity": self.activity,
                "queue": queue,
                "queue_position": position,
                "bridged_with": bridged,
                "conference": conference,
                "endpoint": self.endpoint.key if self.endpoint else None,
                "gathering": self.gather is not None,
                "answered": self.answered,
                "finished": self.finished,
                "end_reason": self.end_reason,
                "duration": self.duration(),
                "date_created": self.date_created.isoformat(),
                "start_time": self.start_time.isoformat() if self.start_time else None,
                "end_time": self.end_time.isoformat() if self.end_time else None,
            }

    def call_time(self) -> float | None:
        """Seconds of call time since the leg was answered, as a caller would feel them.

        Prompts, pauses and timeouts run at the time scale, so their wall time is scaled back up;
        everything else (webhooks, the service's own work) takes its real time, as on Twilio. At a
        small time scale this keeps a slow webhook from looking a hundred times slower than it was.
        """
        if self.answered_at is None:
            return None
        end = self._ended_at if self.finished and self._ended_at else time.monotonic()
        wall = end - self.answered_at
        scaled = min(self._scaled_wall, wall)
        return round(wall - scaled + scaled / self.config.time_scale, 3)

    def event(self, kind: str, **data: Any) -> None:
        """Add to the transcript, mirrored to the device this leg rings or is connected to.

        Every event after the answer carries `call_s`, the call time it happened at (`call_time`)."""
        at = self.call_time()
        if at is not None and "call_s" not in data:
            data["call_s"] = at
        self.log.append(kind, **data)
        endpoint = self.endpoint
        if endpoint is not None:
            endpoint.log.append(kind, call_sid=self.sid, **data)

    def params(self, **extra: Any) -> dict[str, str]:
        """Twilio's standard voice request parameters for this leg, plus `extra`."""
        values: dict[str, Any] = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": self.sid,
            "CallStatus": self.status,
            "Direction": self.direction,
            "From": self.from_,
            "To": self.to,
            "Caller": self.from_,
            "Called": self.to,
        }
        if self.parent is not None:
            values["ParentCallSid"] = self.parent.sid
        values.update(extra)
        return {k: str(v) for k, v in values.items() if v is not None}

    # ------------------------------------------------------------------ waking and waiting

    def wake(self) -> None:
        """Wake this call's thread (lock taken here; re-entrant if already held)."""
        with self.lock:
            self.cv.notify_all()

    def _check(self) -> None:
        """Raise whatever signal another thread left for this call (hang-up wins)."""
        if self._hangup is not None:
            raise CallEnded(self._hangup)
        if self._redirect is not None:
            redirect, self._redirect = self._redirect, None
            raise redirect
        if self._signal is not None:
            signal, self._signal = self._signal, None
            raise signal

    def _wait(self, seconds: float | None, until: Callable[[], Any] | None = None, barge: bool = False) -> Any:
        """Block up to `seconds` of wall-clock time (None = no limit), raising any signal.

        Returns the truthy value of `until()` (evaluated under the lock) when it becomes true,
        "digit" when `barge` and a key is pressed, or "timeout".
        """
        began = time.monotonic()
        deadline = None if seconds is None else began + seconds
        try:
            with self.lock:
                while True:
                    self._check()
                    if until is not None:
                        value = until()
                        if value:
                            return value
                    if barge and (self.dtmf or self.speech is not None):
                        return "digit"
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return "timeout"
                    # Re-check at least every second, so a missed notify can only delay, never hang.
                    self.cv.wait(1.0 if remaining is None else min(remaining, 1.0))
        finally:
            self._scaled_wall += time.monotonic() - began

    # ------------------------------------------------------------------ control from outside

    def start(self) -> None:
        """Run this active leg on its own thread."""
        self.thread = threading.Thread(target=self._run, name=f"call-{self.sid[:10]}", daemon=True)
        self.thread.start()

    def press(self, digits: str, when: str = "now") -> bool:
        """The person on this leg presses keys; `when="next-gather"` saves them for the next Gather.

        A saved entry is pressed once that Gather's prompt has played; "barge:111" presses as soon as
        it listens (a caller who knows the menu and types ahead), and "say:words" speaks instead.
        Returns False when the keys went nowhere (no Gather listening, or one that takes only
        speech), as on a real call.
        """
        with self.lock:
            if self.finished:
                return False
            if when == "next-gather":
                self.scripted_inputs.append(digits or "")
                self.event("digits.queued", digits=digits or "")
                return True
            bridge = self.bridge
            if self.gather is not None and self.gather.dtmf:
                self.dtmf.extend(digits)
                self.cv.notify_all()
                accepted = True
            else:
                accepted = False
        self.event("digits", digits=digits, heard_by="gather" if accepted else None)
        if not accepted and bridge is not None and "*" in digits:
            self._star_pressed(bridge)
        return accepted

    def _star_pressed(self, bridge: Bridge) -> None:
        """`hangupOnStar`: the caller leaves the bridge and carries on with their TwiML."""
        dialer = bridge.a
        if dialer.hangup_on_star and self is dialer:
            self.emulator.disconnect(bridge, by=self)
            other = bridge.other(self)
            if other.passive:
                self.emulator.end_passive(other, "hung-up-on-star")

    def talk(self, text: str) -> list[str]:
        """The person on this leg says `text`; returns the SIDs of the legs that heard it."""
        with self.lock:
            if self.finished:
                return []
            hearers = self._hearers()
            if self.gather is not None and self.gather.speech:
                self.speech = text
                self.cv.notify_all()
        self.event("spoke", text=text, heard_by=[c.sid for c in hearers])
        for other in hearers:
            other.event("heard", text=text, from_sid=self.sid, party=self.party)
        return [c.sid for c in hearers]

    def _hearers(self) -> list["Call"]:
        """Who can hear this leg right now (bridge partner, or conference rules). Lock held."""
        if self.bridge is not None and self.bridge.started_at is not None and not self.bridge.ended:
            return [self.bridge.other(self)]
        p = self.participant
        if p is None or p.conference.status != "in-progress" or p.muted or p.hold:
            return []
        others = [q for q in p.conference.participants.values() if q is not p and not q.hold]
        if p.coaching:
            return [q.call for q in others if q.call.sid == p.call_sid_to_coach]
        return [q.call for q in others]

    def request_hangup(self, reason: str, final_status: str | None = None) -> None:
        """End the call from outside (person, REST API, device); safe from any thread."""
        with self.lock:
            if self.finished:
                return
            if final_status and not self.answered:
                self.final_status = final_status
            if self.passive:
                passive = True
            else:
                passive = False
                if self._hangup is None:
                    self._hangup = reason
                self.cv.notify_all()
        if passive:
            self.emulator.end_passive(self, reason)

    def redirect(self, url: str | None, method: str = "POST", twiml_body: str | None = None,
                 queue_result: str = "redirected") -> None:
        """Interrupt whatever the call is doing and run a new document (REST redirect)."""
        with self.lock:
            if self.finished:
                return
            if not self.answered:
                # A call still ringing simply uses the new instructions once answered.
                self.url, self.method, self.twiml_body = url, method, twiml_body
                return
            if self.passive:
                # The dialled leg leaves its bridge and starts running TwiML of its own.
                self.passive = False
                bridge = self.bridge
                self.conference_request = None
                self.url, self.method, self.twiml_body = url, method, twiml_body
                self._resume_with = Fetch(url, method, twiml=twiml_body, purpose="redirect")
                start_thread = True
            else:
                self._redirect = Redirected(url, method, twiml_body, queue_result)
                self.cv.notify_all()
                start_thread, bridge = False, None
        if start_thread:
            if bridge is not None:
                self.emulator.disconnect(bridge, by=self)
            self.thread = threading.Thread(target=self._run_redirected_leg, name=f"call-{self.sid[:10]}",
                                           daemon=True)
            self.thread.start()

    def deliver(self, signal: Signal) -> None:
        """Leave `signal` for this call's thread (lock held by the caller or taken here)."""
        with self.lock:
            self._signal = signal
            self.cv.notify_all()

    # ------------------------------------------------------------------ status and lifecycle

    def set_status(self, status: str) -> None:
        """Move to `status`, record it and send the status callback if subscribed."""
        with self.lock:
            if self.status == status:
                return
            if self.status in TERMINAL_STATUSES:
                return
            self.status = status
            self.date_updated = utcnow()
            self.activity = status if status != "in-progress" else self.activity
            event_name = STATUS_EVENT.get(status)
            subscribed = bool(self.status_callback) and event_name in self.status_callback_events
            if subscribed:
                sequence = self.callback_sequence
                self.callback_sequence += 1
                extra: dict[str, Any] = {
                    "CallbackSource": "call-progress-events",
                    "SequenceNumber": sequence,
                    "Timestamp": rfc2822(utcnow()),
                }
                if status in TERMINAL_STATUSES:
                    seconds = self.duration()
                    extra["CallDuration"] = seconds
                    extra["Duration"] = -(-seconds // 60)
                params = self.params(**extra)
            # Recorded and queued under the lock, so callbacks leave in SequenceNumber order.
            self.event("status", status=status)
            if subscribed:
                self.emulator.send_status_callback(self, params, status, event_name, sequence)

    def _run(self) -> None:
        """Thread body of an active leg."""
        try:
            if self.direction == "inbound":
                self._run_inbound()
            else:
                self._run_outbound()
        except CallEnded as ended:
            self.end_reason = self.end_reason or ended.reason
        except Exception as exc:  # a bug here must not leave the call hanging forever
            self.emulator.alert(0, f"Emulator internal error: {exc!r}", call=self, level="error")
            self.end_reason = "system-error"
        finally:
            self.finish()

    def _run_redirected_leg(self) -> None:
        """Thread body of a dialled leg that the REST API redirected to TwiML of its own."""
        try:
            self._run_documents(self._resume_with)
        except Exception as exc:
            self.emulator.alert(0, f"Emulator internal error: {exc!r}", call=self, level="error")
            self.end_reason = "system-error"
        finally:
            self.finish()

    def _run_inbound(self) -> None:
        """An incoming call to the configured number: ring, fetch the Voice URL, run it."""
        self.set_status("initiated")
        self.set_status("ringing")
        self.activity = "ringing"
        self._run_documents(Fetch(self.url, self.method, twiml=self.twiml_body, purpose="voice-url"), first=True)

    def _run_outbound(self) -> None:
        """A REST-created call: ring the device, then run its TwiML (or join a conference)."""
        self.set_status("initiated")
        outcome = self.emulator.ring(self)
        if outcome != "ringing":
            self.final_status = outcome
            self.end_reason = outcome
            return
        try:
            result = self._wait(self.ring_timeout if self.real_time else self.config.scaled(self.ring_timeout),
                                until=lambda: "answered" if self.answered else (self.final_status or None))
        except CallEnded as ended:
            self.final_status = self.final_status or "canceled"
            self.end_reason = ended.reason
            return
        if result != "answered":
            self.final_status = "no-answer" if result == "timeout" else result
            self.end_reason = self.final_status
            return
        if self.conference_request is not None:
            name, options = self.conference_request
            try:
                self._conference_session(name, options)
            except CallEnded as ended:
                self.end_reason = ended.reason
                return
            except Redirected as redirect:
                self._run_documents(Fetch(redirect.url, redirect.method, twiml=redirect.twiml, purpose="redirect"))
                return
            self.end_reason = self.end_reason or "left-conference"
            return
        self._run_documents(Fetch(self.url, self.method, twiml=self.twiml_body, purpose="url",
                                  params=self._machine_detection_params()))

    def answered_by(self) -> str | None:
        """What answering machine detection says picked up: None unless the call asked for it."""
        if not self.machine_detection or not self.answered:
            return None
        return self.config.answered_by.get(self.to, "human")

    def _machine_detection_params(self) -> dict[str, str]:
        """The answer webhook's AnsweredBy (and its detection time), as Twilio sends them with MachineDetection."""
        answered_by = self.answered_by()
        if answered_by is None:
            return {}
        self.event("machine_detection", answered_by=answered_by)
        return {"AnsweredBy": answered_by, "MachineDetectionDuration": "2000"}

    def answer(self) -> None:
        """Mark the leg answered (in-progress)."""
        with self.lock:
            if self.answered or self.finished:
                return
            self.answered = True
            self.answered_at = time.monotonic()
            self.start_time = utcnow()
            self.cv.notify_all()
            if self.parent is not None:
                self.parent.cv.notify_all()
        self.set_status("in-progress")

    def finish(self) -> None:
        """Close the leg: leave whatever it is in, settle its status, send the last callback."""
        with self.lock:
            if self.finished:
                return
            self._ended_at = time.monotonic()
            self.finished = True
            self.end_time = utcnow()
            status = self.final_status or ("completed" if self.answered else "canceled")
            pending = self._signal
            self._signal = None
            bridge = self.bridge
            participant = self.participant
            self.activity = "ended"
        if isinstance(pending, Dequeued):
            self.emulator.disconnect(pending.bridge, by=self)
        if bridge is not None:
            self.emulator.disconnect(bridge, by=self)
        if participant is not None:
            self.emulator.leave_conference(participant, "hangup")
        self.emulator.release(self)
        if self.parent is not None:
            self.parent.wake()  # a Dial waiting on this leg must notice it ended
        reason = self.end_reason or "hangup"
        self.event("hangup", reason=reason)
        self.set_status(status)
        self.event("ended", status=status, reason=reason, duration=self.duration())
        self.emulator.call_finished(self)

    # ------------------------------------------------------------------ documents

    def _run_documents(self, fetch: Fetch | None, first: bool = False) -> None:
        """Load and run documents until one ends without sending us elsewhere; then hang up."""
        pending = fetch
        while pending is not None:
            try:
                doc, base = self._load(pending)
                if first and not self.answered:
                    if doc.verbs and doc.verbs[0].name == "Reject":
                        self._reject(doc.verbs[0])
                        return
                    self.answer()
                first = False
                self.activity = "running TwiML"
                pending = self._execute(doc, base, "call")
            except Redirected as redirect:
                self.event("redirected", url=redirect.url, by="api")
                pending = Fetch(redirect.url, redirect.method, twiml=redirect.twiml, purpose="redirect")
            except AppError:
                self._application_error()
                return
            except CallEnded as ended:
                self.end_reason = ended.reason
                return
        # Twilio hangs up when it runs out of TwiML.
        self.end_reason = self.end_reason or "end-of-twiml"

    def _load(self, fetch: Fetch) -> tuple[twiml.Document, str | None]:
        """Fetch (or take inline) a TwiML document and parse it; failures become alerts + AppError."""
        self._check()
        if fetch.twiml is not None:
            body, base = fetch.twiml, fetch.url
            self.event("twiml", source="inline", purpose=fetch.purpose)
        else:
            if not fetch.url:
                self.emulator.alert(11100, "Invalid URL format: no URL to fetch", call=self)
                raise AppError(11100, "no URL")
            params = self.params(**fetch.params)
            self.event("webhook", purpose=fetch.purpose, url=fetch.url, method=fetch.method)
            try:
                response = self.emulator.sender.send(fetch.url, fetch.method, params,
                                                     audio_ok=fetch.purpose == "conference-wait")
            except WebhookError as err:
                self.emulator.alert_webhook(err, call=self)
                self.event("webhook.failed", url=err.url, code=err.code, status_code=err.status_code)
                raise AppError(err.code, err.detail) from None
            body, base = response.body, fetch.url
            self.event("webhook.response", url=response.url, status_code=response.status_code,
                       ms=int(response.elapsed * 1000))
            if response.content_type.startswith("audio/"):
                # Twilio plays an audio file named as a conference's waitUrl, as if by <Play>.
                body = f'<Response><Play>{escape(fetch.url)}</Play></Response>'

        try:
            doc = twiml.parse(body)
        except TwimlError as err:
            self.emulator.alert(err.code, err.detail, call=self, url=base, body=body[:2000])
            raise AppError(err.code, err.detail) from None
        for warning in doc.warnings:
            self.emulator.alert(SCHEMA_WARNING, warning, call=self, url=base, level="warning")
        self._check()
        return doc, base

    def _execute(self, doc: twiml.Document, base: str | None, context: str) -> Fetch | None:
        """Run a document's verbs in order; return where to go next, or None when it runs out."""
        for verb in doc.verbs:
            self._check()
            if verb.name in UNSUPPORTED_VERBS:
                self.emulator.alert(0, f"<{verb.name}> is a Twilio verb the emulator does not perform; skipped",
                                    call=self, url=base, level="warning")
                self.event("unsupported", verb=verb.name)
                continue
            if verb.name not in CONTEXT_VERBS[context]:
                self.emulator.alert(SCHEMA_WARNING, f"<{verb.name}> is not allowed in a {context} document; "
                                    "skipped", call=self, url=base, level="warning")
                continue
            handler = getattr(self, "_verb_" + verb.name.lower())
            try:
                result = handler(verb, base, context)
            except TwimlError as err:
                self.emulator.alert(err.code, err.detail, call=self, url=base)
                raise AppError(err.code, err.detail) from None
            if isinstance(result, Fetch):
                return result
        return None

    def _application_error(self) -> None:
        """Say Twilio's application-error message and hang up."""
        if not self.answered:
            self.answer()
        self.end_reason = "application-error"
        try:
            self._speak(APPLICATION_ERROR_TEXT, voice="woman", language="en-US", loops=1)
        except Signal:
            pass

    def _notify(self, url: str, method: str, params: dict[str, Any], purpose: str) -> None:
        """Request an action URL whose answer will be ignored (the call is gone or elsewhere)."""
        self.event("webhook", purpose=purpose, url=url, method=method, response_ignored=True)
        try:
            self.emulator.sender.send(url, method, self.params(**params))
        except WebhookError as err:
            self.emulator.alert_webhook(err, call=self)

    def _reject(self, verb: Verb) -> None:
        """`<Reject>` as the first verb: the call is never answered."""
        reason = verb.get("reason", "rejected")
        self.final_status = "busy" if reason == "busy" else "no-answer"
        self.end_reason = "rejected"
        self.event("rejected", reason=reason)

    # ------------------------------------------------------------------ simple verbs

    def _speak(self, text: str, *, voice: str, language: str, loops: int, barge: bool = False) -> bool:
        """Say `text` `loops` times (0 = until interrupted); True if a key barged in."""
        self.event("say", text=text, voice=voice, language=language, loop=loops)
        words = max(1, len(text.split()))
        once = max(0.4, words / WORDS_PER_SECOND)
        seconds = None if loops == 0 else self.config.scaled(once * loops)
        return self._wait(seconds, barge=barge) == "digit"

    def _verb_say(self, verb: Verb, base: str | None, context: str, barge: bool = False) -> bool:
        """`<Say>`: the text is recorded in the transcript and takes time to speak."""
        loops = int(verb.number("loop", 1))
        return self._speak(verb.text, voice=verb.get("voice", "man"), language=verb.get("language", "en-US"),
                           loops=loops, barge=barge)

    def _verb_play(self, verb: Verb, base: str | None, context: str, barge: bool = False) -> bool:
        """`<Play>`: an audio URL (assumed clip length) or DTMF `digits`."""
        digits = verb.get("digits")
        if digits:
            if set(digits) - DTMF_KEYS:
                raise TwimlError(SCHEMA_WARNING, f"<Play digits> may only hold 0-9, *, # and w: {digits!r}")
            self.event("play", digits=digits)
            return self._wait(self.config.scaled(0.25 * len(digits)), barge=barge) == "digit"
        if not verb.text:
            raise TwimlError(SCHEMA_WARNING, "<Play> needs a URL or digits")
        loops = int(verb.number("loop", 1))
        self.event("play", url=resolve(base, verb.text), loop=loops)
        seconds = None if loops == 0 else self.config.scaled(self.config.clip_seconds * loops)
        return self._wait(seconds, barge=barge) == "digit"

    def _verb_pause(self, verb: Verb, base: str | None, context: str, barge: bool = False) -> bool:
        """`<Pause length>`: silence (default one second)."""
        length = verb.number("length", 1)
        self.event("pause", length=length)
        return self._wait(self.config.scaled(length), barge=barge) == "digit"

    def _verb_redirect(self, verb: Verb, base: str | None, context: str) -> Fetch:
        """`<Redirect>`: continue with the document at the (possibly relative) URL."""
        if not verb.text:
            raise TwimlError(SCHEMA_WARNING, "<Redirect> needs a URL")
        url = resolve(base, verb.text)
        self.event("redirected", url=url, by="twiml")
        return Fetch(url, verb.method(), purpose="redirect")

    def _verb_hangup(self, verb: Verb, base: str | None, context: str) -> None:
        """`<Hangup>`: end the call now."""
        raise CallEnded("hangup-verb")

    def _verb_reject(self, verb: Verb, base: str | None, context: str) -> None:
        """`<Reject>` after the call was answered can only hang up."""
        raise CallEnded("rejected")

    def _verb_leave(self, verb: Verb, base: str | None, context: str) -> None:
        """`<Leave>`: leave the queue this caller waits in (nothing happens outside a queue)."""
        if context == "queue-wait":
            raise LeaveQueue()
        self.event("leave.ignored", detail="<Leave> outside a queue does nothing")

    # ------------------------------------------------------------------ Gather

    def _verb_gather(self, verb: Verb, base: str | None, context: str) -> Fetch | None:
        """`<Gather>`: collect keys or speech, then request the action URL.

        As Twilio documents it: nested Say/Play/Pause stop at the first key or words when `bargeIn`
        is true (the default), and play to the end otherwise, the input still counting; `input`
        says which of keys and speech are heard; `numDigits`, `finishOnKey` and `timeout` (silence
        after the prompt, and between keys) end key input; `speechTimeout` ("auto" or seconds)
        waits after the words; `hints` and `language` are recorded for the transcript.
        """
        timeout = verb.number("timeout", 5)
        finish = verb.get("finishOnKey")
        finish = "#" if finish is None else finish
        if len(finish) > 1 or (finish and finish not in "0123456789*#"):
            raise TwimlError(SCHEMA_WARNING, f"Gather finishOnKey must be one key or empty: {finish!r}")
        num_digits = None
        if verb.get("numDigits"):
            num_digits = int(verb.number("numDigits", 1))
            if num_digits < 1:
                raise TwimlError(SCHEMA_WARNING, "Gather numDigits must be a positive integer")
        action = resolve(base, verb.get("action")) if verb.get("action") else base
        method = verb.method()
        on_empty = verb.flag("actionOnEmptyResult", False)
        inputs = set((verb.get("input") or "dtmf").replace(",", " ").split())
        if not inputs or inputs - {"dtmf", "speech"}:
            raise TwimlError(SCHEMA_WARNING, f"Gather input must be dtmf, speech or both: {verb.get('input')!r}")
        speech, dtmf = "speech" in inputs, "dtmf" in inputs
        barge_in = verb.flag("bargeIn", True)
        # Without speechTimeout Twilio waits `timeout` after the words; "auto" (its own end-of-speech
        # detection) is refused, with a warning, by the default speech model.
        speech_timeout: str | float = verb.get("speechTimeout") or timeout
        if speech_timeout == "auto" and speech and (verb.get("speechModel") or "default") == "default":
            self.emulator.alert(AUTO_WITH_DEFAULT_MODEL, "Gather: speechTimeout auto cannot be used with model default",
                                call=self, url=base, level="warning")
        elif speech_timeout != "auto":
            speech_timeout = verb.number("speechTimeout", timeout)
        with self.lock:
            self.dtmf = []
            self.speech = None
            self.gather = GatherState(finish, num_digits, speech, dtmf)
            scripted = self.scripted_inputs.popleft() if self.scripted_inputs else _NO_INPUT
        self.activity = "gather"
        self.event("gather.started", timeout=timeout, finish_on_key=finish, num_digits=num_digits, action=action,
                   method=method, input=" ".join(sorted(inputs)), barge_in=barge_in, hints=verb.get("hints"),
                   language=verb.get("language"), speech_timeout=speech_timeout)
        try:
            if isinstance(scripted, str) and scripted.startswith(BARGE_PREFIX):
                self._scripted(scripted[len(BARGE_PREFIX):])
                scripted = _NO_INPUT
            barged = False
            for child in verb.children:
                handler = getattr(self, "_verb_" + child.name.lower())
                if handler(child, base, context, barge=barge_in) and barge_in:
                    barged = True
                    break
            if scripted is not _NO_INPUT:
                # Entries saved for "the next Gather" are keyed (or said) once the prompt has been heard.
                self._scripted(scripted)
            digits, reason, key = self._collect(timeout, finish, num_digits)
            with self.lock:
                said = self.speech
            if said is not None and reason == "speech":
                # Twilio waits for the end of the caller's words before it sends them.
                wait = AUTO_SPEECH_TIMEOUT_S if speech_timeout == "auto" else float(speech_timeout)
                self._wait(self.config.scaled(wait))
        finally:
            with self.lock:
                self.gather = None
                self.dtmf = []
                self.speech = None
        self.event("gather.ended", digits=digits, reason=reason, finished_on_key=key, speech=said,
                   barged_in=barged)
        if digits or said or on_empty:
            params: dict[str, Any] = {"Digits": digits, "FinishedOnKey": key, "msg": "Gather End"}
            if said:
                params.update({"SpeechResult": said, "Confidence": "0.9"})
            return Fetch(action, method, params, purpose="gather-action")
        # No input: Twilio carries on with the next verb.
        return None

    def _scripted(self, entry: str) -> None:
        """Key (or, with "say:", speak) a scripted entry into the Gather listening now."""
        if not entry:
            return
        if entry.startswith(SAY_PREFIX):
            words = entry[len(SAY_PREFIX):].strip()
            with self.lock:
                heard = self.gather is not None and self.gather.speech
                if heard:
                    self.speech = words
            self.event("spoke", text=words, heard_by=[self.sid] if heard else [], scripted=True)
            return
        with self.lock:
            heard = self.gather is not None and self.gather.dtmf
            if heard:
                self.dtmf.extend(entry)
        self.event("digits", digits=entry, heard_by="gather" if heard else None, scripted=True)

    def _collect(self, timeout: float, finish: str, num_digits: int | None) -> tuple[str, str, str]:
        """Gather keys until numDigits, finishOnKey or `timeout` seconds of silence between keys."""
        collected = ""
        while True:
            with self.lock:
                keys, self.dtmf = self.dtmf, []
                said = self.speech
            for key in keys:
                if finish and key == finish:
                    return collected, "finish-on-key", key
                collected += key
                if num_digits and len(collected) >= num_digits:
                    return collected, "num-digits", ""
            if said is not None:
                return collected, "speech", ""
            result = self._wait(self.config.scaled(timeout), until=lambda: bool(self.dtmf) or self.speech is not None)
            if result == "timeout":
                return collected, "timeout", ""

    # ------------------------------------------------------------------ Enqueue

    def _queue_params(self, queue: Queue) -> dict[str, Any]:
        """The parameters Twilio adds to waitUrl requests."""
        with self.lock:
            position = queue.position_of(self) or 0
            member = queue.member(self.sid)
            return {
                "QueueSid": queue.sid,
                "QueuePosition": position,
                "QueueTime": member.wait_time() if member else 0,
                "AvgQueueTime": queue.average_wait(),
                "CurrentQueueSize": len(queue.members),
                "MaxQueueSize": queue.max_size,
            }

    def _verb_enqueue(self, verb: Verb, base: str | None, context: str) -> Fetch | None:
        """`<Enqueue>`: wait in a named queue (running waitUrl) until dequeued, left or redirected."""
        name = verb.text.strip()
        if not name:
            raise TwimlError(SCHEMA_WARNING, "<Enqueue> needs a queue name (TaskRouter workflows are not emulated)")
        if len(name) > 64:
            raise TwimlError(SCHEMA_WARNING, "Queue names are at most 64 characters")
        action = resolve(base, verb.get("action")) if verb.get("action") else None
        method = verb.method()
        wait_url = resolve(base, verb.get("waitUrl")) if verb.get("waitUrl") else None
        wait_method = verb.method("waitUrlMethod")
        queue, member = self.emulator.enqueue(self, name)
        ended: CallEnded | None = None
        redirect: Redirected | None = None
        queue_time = 0
        if member is None:
            result = "queue-full"
        else:
            self.activity = "queued"
            self.event("enqueued", queue=name, queue_sid=queue.sid, position=queue.position_of(self))
            result = "error"
            try:
                self._queue_wait(queue, wait_url, wait_method)
            except Dequeued as dequeued:
                queue_time = member.wait_time()
                result, ended = self._queue_bridged(queue, member, dequeued)
            except LeaveQueue:
                result = "leave"
            except Redirected as redirected:
                result, redirect = redirected.queue_result, redirected
            except CallEnded as call_ended:
                result, ended = "hangup", call_ended
            except AppError:
                result = "error"
            finally:
                queue_time = queue_time or member.wait_time()
                self.emulator.dequeue(queue, member)
                with self.lock:
                    pending = self._signal if isinstance(self._signal, Dequeued) else None
                    if pending is not None:
                        self._signal = None
                if pending is not None:
                    # Picked by an agent at the very moment we left: that bridge never happens.
                    self.emulator.disconnect(pending.bridge, by=self)
        self.activity = "running TwiML"
        self.event("queue.left", queue=name, result=result, queue_time=queue_time)
        params = {"QueueResult": result, "QueueSid": queue.sid, "QueueTime": queue_time}
        if ended is not None or redirect is not None:
            if action:
                self._notify(action, method, params, "enqueue-action")
            raise ended or redirect
        if action:
            return Fetch(action, method, params, purpose="enqueue-action")
        return None

    def _queue_wait(self, queue: Queue, wait_url: str | None, wait_method: str) -> None:
        """Run the waitUrl document over and over (or hold music) until a signal ends the wait."""
        while True:
            if wait_url is None:
                self.event("play", url=DEFAULT_HOLD_MUSIC, loop=1, hold_music=True)
                self._wait(self.config.scaled(self.config.clip_seconds))
                continue
            started = time.monotonic()
            params = self._queue_params(queue)
            self.event("queue.wait", position=params["QueuePosition"], size=params["CurrentQueueSize"],
                       queue_time=params["QueueTime"], avg_queue_time=params["AvgQueueTime"])
            pending: Fetch | None = Fetch(wait_url, wait_method, params, purpose="wait-url")
            while pending is not None:
                doc, doc_base = self._load(pending)
                pending = self._execute(doc, doc_base, "queue-wait")
                if pending is not None:
                    pending.params.update(self._queue_params(queue))
            if time.monotonic() - started < self.config.scaled(0.5):
                # A wait document with nothing that takes time would make us poll in a tight loop.
                self._wait(self.config.scaled(1.0))

    def _queue_bridged(self, queue: Queue, member: QueueMember, dequeued: Dequeued
                       ) -> tuple[str, CallEnded | None]:
        """Dequeued by a `<Dial><Queue>`: play its announcement, then talk until the bridge ends."""
        bridge = dequeued.bridge
        self.event("dequeued", by=bridge.a.sid, queue=queue.friendly_name)
        try:
            if dequeued.url:
                params = {"QueueSid": queue.sid, "QueueTime": member.wait_time(),
                          "DequeingCallSid": bridge.a.sid}
                try:
                    doc, doc_base = self._load(Fetch(dequeued.url, dequeued.method, params, purpose="queue-url"))
                    pending = self._execute(doc, doc_base, "queue-announce")
                    while pending is not None:
                        doc, doc_base = self._load(pending)
                        pending = self._execute(doc, doc_base, "queue-announce")
                except AppError:
                    pass  # the alert is logged; Twilio still connects the two parties
            self.emulator.dequeue(queue, member)
            if not self.emulator.connect(bridge):
                return "hangup", None
            self.activity = "bridged"
            self._wait(None, until=lambda: bridge.ended)
            return "bridged", None
        except CallEnded as ended:
            self.emulator.disconnect(bridge, by=self)
            return ("bridged" if bridge.started_at else "hangup"), ended
        except Redirected:
            self.emulator.disconnect(bridge, by=self)
            raise

    # ------------------------------------------------------------------ Dial

    def _verb_dial(self, verb: Verb, base: str | None, context: str) -> Fetch | None:
        """`<Dial>`: connect to clients/numbers, a queue's first caller, or a conference."""
        nouns = verb.children
        kinds = {noun.name for noun in nouns}
        if len(nouns) > 1 and kinds & {"Conference", "Queue"}:
            raise TwimlError(SCHEMA_WARNING, "<Conference> and <Queue> must be the only noun in a <Dial>")
        if len(nouns) > 10:
            raise TwimlError(SCHEMA_WARNING, "<Dial> can ring at most 10 numbers or clients at once")
        action = resolve(base, verb.get("action")) if verb.get("action") else None
        method = verb.method()
        timeout = verb.number("timeout", 30)
        time_limit = verb.number("timeLimit", 14400)
        self.hangup_on_star = verb.flag("hangupOnStar", False)
        self.activity = "dialing"
        if "Conference" in kinds:
            result, ended = self._dial_conference(nouns[0], base)
        elif "Queue" in kinds:
            result, ended = self._dial_queue(nouns[0], base, timeout, time_limit)
        else:
            result, ended = self._dial_legs(nouns, base, timeout, time_limit, verb.get("callerId"))
        self.hangup_on_star = False
        self.activity = "running TwiML"
        self.event("dial.ended", **{k: v for k, v in result.items()})
        if ended is not None:
            if action:
                self._notify(action, method, result, "dial-action")
            raise ended
        if action:
            return Fetch(action, method, result, purpose="dial-action")
        return None

    def _await_bridge_end(self, bridge: Bridge, time_limit: float) -> None:
        """Stay connected until either side leaves or `timeLimit` passes."""
        outcome = self._wait(self.config.scaled(time_limit), until=lambda: bridge.ended)
        if outcome == "timeout":
            self.emulator.disconnect(bridge, by=self)

    def _dial_legs(self, nouns: list[Verb], base: str | None, timeout: float, time_limit: float,
                   caller_id: str | None) -> tuple[dict[str, Any], CallEnded | None]:
        """Ring every client/number at once; bridge the first to answer."""
        legs: list[tuple[Call, Verb]] = []
        for noun in nouns:
            target = noun.text.strip()
            if not target:
                raise TwimlError(SCHEMA_WARNING, f"<{noun.name}> needs an identity or number")
            to = ("client:" + target) if noun.name == "Client" else target
            events = tuple((noun.get("statusCallbackEvent") or "completed").replace(",", " ").split())
            leg = Call(self.emulator, direction="outbound-dial", from_=caller_id or self.from_, to=to, parent=self,
                       status_callback=resolve(base, noun.get("statusCallback")) if noun.get("statusCallback")
                       else None,
                       status_callback_method=noun.method("statusCallbackMethod"), status_callback_events=events,
                       passive=True)
            self.emulator.register_call(leg)
            legs.append((leg, noun))
        self.event("dial.started", to=[leg.to for leg, _ in legs], timeout=timeout)
        for leg, _ in legs:
            leg.set_status("initiated")
            outcome = self.emulator.ring(leg)
            if outcome != "ringing":
                self.emulator.end_passive(leg, outcome, final_status=outcome)
        real_time = any(leg.real_time for leg, _ in legs)
        try:
            self._wait(timeout if real_time else self.config.scaled(timeout),
                       until=lambda: any(l.answered for l, _ in legs) or all(l.finished for l, _ in legs))
        except CallEnded as ended:
            for leg, _ in legs:
                self.emulator.end_passive(leg, "caller-hung-up", final_status="canceled")
            return {"DialCallStatus": "canceled", "DialCallSid": legs[0][0].sid}, ended
        except Redirected:
            for leg, _ in legs:
                self.emulator.end_passive(leg, "caller-redirected", final_status="canceled")
            raise
        with self.lock:
            winner = next(((l, n) for l, n in legs if l.answered and not l.finished), None)
        for leg, _ in legs:
            if winner is None or leg is not winner[0]:
                self.emulator.end_passive(leg, "not-answered", final_status="no-answer" if winner is None
                                          else "canceled")
        if winner is None:
            statuses = [leg.final_status or leg.status for leg, _ in legs]
            status = "busy" if "busy" in statuses else "failed" if all(s == "failed" for s in statuses) \
                else "no-answer"
            return {"DialCallStatus": status, "DialCallSid": legs[0][0].sid, "DialCallDuration": 0}, None
        leg, noun = winner
        if noun.get("url"):
            # The whisper runs on the answering party before the caller is connected.
            leg.activity = "whisper"
            try:
                doc, doc_base = leg._load(Fetch(resolve(base, noun.get("url")), noun.method(),
                                                {}, purpose="whisper"))
                pending = leg._execute(doc, doc_base, "whisper")
                while pending is not None:
                    doc, doc_base = leg._load(pending)
                    pending = leg._execute(doc, doc_base, "whisper")
            except (CallEnded, AppError):
                self.emulator.end_passive(leg, leg._hangup or "whisper-hung-up")
            except Signal:
                pass
            if leg.finished:
                return {"DialCallStatus": "completed", "DialCallSid": leg.sid, "DialCallDuration": 0,
                        "DialBridged": "false"}, None
        bridge = Bridge(self, leg)
        self.emulator.connect(bridge)
        try:
            self._await_bridge_end(bridge, time_limit)
        except CallEnded as ended:
            self.emulator.disconnect(bridge, by=self)
            self.emulator.end_passive(leg, "caller-hung-up")
            return self._dial_result(leg, bridge), ended
        except Redirected:
            self.emulator.disconnect(bridge, by=self)
            self.emulator.end_passive(leg, "caller-redirected")
            raise
        result = self._dial_result(leg, bridge)
        if not leg.passive:
            return result, None  # the leg was redirected elsewhere and lives on
        self.emulator.end_passive(leg, "caller-left-bridge")
        return result, None

    @staticmethod
    def _dial_result(leg: "Call", bridge: Bridge) -> dict[str, Any]:
        """Dial action parameters for a leg that was connected."""
        return {"DialCallStatus": "completed", "DialCallSid": leg.sid, "DialCallDuration": bridge.duration(),
                "DialBridged": "true"}

    def _dial_queue(self, noun: Verb, base: str | None, timeout: float, time_limit: float
                    ) -> tuple[dict[str, Any], CallEnded | None]:
        """`<Dial><Queue>`: take the caller at the front (waiting up to `timeout` for one) and bridge."""
        name = noun.text.strip()
        queue = self.emulator.queue_by_name(name)
        if queue is None:
            # Twilio: "If the queue does not exist, Dial will post an error status to its action URL."
            self.emulator.alert(0, f"<Dial><Queue>: no queue named {name!r}", call=self, level="warning")
            return {"DialCallStatus": "failed"}, None
        url = resolve(base, noun.get("url")) if noun.get("url") else None
        self.event("dial.started", queue=name, timeout=timeout)
        bridge_holder: list[Bridge] = []

        def take_front() -> bool:
            bridge = self.emulator.take_front(queue, self, url, noun.method())
            if bridge is not None:
                bridge_holder.append(bridge)
            return bridge is not None

        with self.lock:
            queue.dialers.add(self)
        try:
            outcome = self._wait(self.config.scaled(timeout), until=take_front)
        except CallEnded as ended:
            return {"DialCallStatus": "canceled", "QueueSid": queue.sid}, ended
        finally:
            with self.lock:
                queue.dialers.discard(self)
        if outcome == "timeout":
            return {"DialCallStatus": "no-answer", "QueueSid": queue.sid}, None
        bridge = bridge_holder[0]
        caller = bridge.b
        try:
            self._wait(None, until=lambda: bridge.started_at is not None or bridge.ended)
            self._await_bridge_end(bridge, time_limit)
        except CallEnded as ended:
            self.emulator.disconnect(bridge, by=self)
            return self._queue_result(caller, bridge, queue), ended
        except Redirected:
            self.emulator.disconnect(bridge, by=self)
            raise
        return self._queue_result(caller, bridge, queue), None

    @staticmethod
    def _queue_result(caller: "Call", bridge: Bridge, queue: Queue) -> dict[str, Any]:
        """Dial action parameters after bridging with a dequeued caller."""
        connected = bridge.started_at is not None
        return {"DialCallStatus": "completed" if connected else "no-answer", "DialCallSid": caller.sid,
                "DialCallDuration": bridge.duration(), "QueueSid": queue.sid,
                "DialBridged": "true" if connected else "false"}

    # ------------------------------------------------------------------ Conference

    def _dial_conference(self, noun: Verb, base: str | None) -> tuple[dict[str, Any], CallEnded | None]:
        """`<Dial><Conference>`: join (or create) the named room until leaving it."""
        wait_url = noun.get("waitUrl")
        options = {
            "muted": noun.flag("muted", False),
            "start_conference_on_enter": noun.flag("startConferenceOnEnter", True),
            "end_conference_on_exit": noun.flag("endConferenceOnExit", False),
            "wait_url": None if wait_url is None else (resolve(base, wait_url) if wait_url else ""),
            "wait_method": noun.method("waitMethod"),
            "max_participants": int(noun.number("maxParticipants", 250)),
            "coach": noun.get("coach"),
            "label": noun.get("participantLabel"),
            "status_callback": resolve(base, noun.get("statusCallback")) if noun.get("statusCallback") else None,
            "status_callback_method": noun.method("statusCallbackMethod"),
            "status_callback_events": set((noun.get("statusCallbackEvent") or "").replace(",", " ").split()),
        }
        started = time.monotonic()
        try:
            sid = self._conference_session(noun.text.strip(), options)
        except CallEnded as ended:
            return self._conference_result(started, getattr(ended, "conference_sid", None)), ended
        return self._conference_result(started, sid), None

    def _conference_result(self, started: float, conference_sid: str | None) -> dict[str, Any]:
        """Dial action parameters after a conference."""
        result: dict[str, Any] = {"DialCallStatus": "completed",
                                  "DialCallDuration": int((time.monotonic() - started) / self.config.time_scale)}
        if conference_sid:
            result["ConferenceSid"] = conference_sid
        return result

    def _conference_session(self, name: str, options: dict[str, Any]) -> str | None:
        """Be in the conference until kicked, it ends, or the call ends; returns its SID."""
        if not name:
            raise TwimlError(SCHEMA_WARNING, "<Conference> needs a room name")
        participant = self.emulator.join_conference(self, name, options)
        if participant is None:
            self.event("conference.full", conference=name)
            return None
        conference = participant.conference
        self.activity = "conference"
        try:
            while True:
                try:
                    with self.lock:
                        started = conference.status == "in-progress"
                    if started:
                        self._wait(None)
                    else:
                        self._conference_wait(options)
                except ConferenceStarted:
                    self.event("conference.started", conference=conference.friendly_name)
                    continue
        except ConferenceExit as exit_:
            self.event("conference.exit", conference=conference.friendly_name, reason=exit_.reason)
        except CallEnded as ended:
            ended.conference_sid = conference.sid  # type: ignore[attr-defined]
            raise
        finally:
            self.emulator.leave_conference(participant, "left")
            self._forget_conference_signals()
        return conference.sid

    def _forget_conference_signals(self) -> None:
        """Drop news of a room this call has left: a start or an end delivered while a redirect was
        also pending (the redirect is raised first) belongs to the old room, not the next document."""
        with self.lock:
            if isinstance(self._signal, (ConferenceStarted, ConferenceExit)):
                self._signal = None

    def _conference_wait(self, options: dict[str, Any]) -> None:
        """Before the conference starts: the waitUrl (Play/Say/Pause/Redirect), hold music, or silence."""
        wait_url = options.get("wait_url")
        while True:
            if wait_url is None:
                self.event("play", url=DEFAULT_HOLD_MUSIC, loop=1, hold_music=True)
                self._wait(self.config.scaled(self.config.clip_seconds))
                continue
            if wait_url == "":
                self._wait(None)
                continue
            started = time.monotonic()
            try:
                pending: Fetch | None = Fetch(wait_url, options.get("wait_method", "POST"), purpose="conference-wait")
                while pending is not None:
                    doc, doc_base = self._load(pending)
                    pending = self._execute(doc, doc_base, "conference-wait")
            except AppError:
                self._wait(None)  # the alert is logged; wait in silence like Twilio's fallback
            if time.monotonic() - started < self.config.scaled(0.5):
                self._wait(self.config.scaled(1.0))
