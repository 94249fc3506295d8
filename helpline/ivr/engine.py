"""The IVR interpreter: walks a caller through the flow file, keeping the call's record as it goes.

It knows step *types*, never step names: what the caller hears and where each key leads come from
`ivr_flows/`. Each method returns the TwiML to answer with and leaves committing to the caller.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from flask import url_for
from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import lifecycle, routing
from ..config import Settings
from ..crypto import Vault
from ..db import append
from ..events import announce
from ..hours import OpeningHours
from ..models import Call, CallEvent, Handler, QueueEntry, utcnow
from ..phone import parse_caller
from ..wait_estimate import TOLD
from . import twiml
from .flow import Action, Flow, Step

#: Seconds of hold music per play of the service's own hold tone (helpline/static/hold-music.wav).
HOLD_CLIP_S = 15
APOLOGY = "We are sorry, something went wrong on our side. Please stay on the line."
#: Said in place of the queue's `position` prompt when nobody is on duty, unless the flow has `announce.no_estimate`.
NO_ESTIMATE = ("You are number {position} in line. Nobody is free to answer just now, so we cannot tell you how long "
               "the wait will be.")
#: What a caller held through an outage hears before the flow's emergency advice (`texts.emergency`).
HELD = ("We are sorry, we cannot take your answers just now. Please stay on the line: you are in the queue "
        "and we will put you through to one of our team as soon as we can.")
#: The timeline's mark that a caller has been told we cannot call them back (they hear it once).
NO_CALLBACK_TOLD = "no_callback_told"
#: "a.m." or "p.m." followed by a sentence's own full stop.
_DOUBLED_STOP = re.compile(r"\b([ap])\.m\.\.")


@dataclass
class Interpreter:
    """Interprets one flow for one app: settings, hours and keys are fixed at start-up."""

    flow: Flow
    settings: Settings
    hours: OpeningHours
    vault: Vault

    @property
    def voice(self) -> twiml.Voice:
        """The voice every prompt is spoken in."""
        return twiml.Voice(self.settings.twilio.voice, self.settings.twilio.language)

    # -- text ---------------------------------------------------------------------------------

    def render(self, text: str, now: dt.datetime, **values: Any) -> str:
        """Fill a prompt's placeholders: `values`, the flow's texts, then the service's own values,
        each worked out only when the prompt (or a text it uses) names it (see _Placeholders)."""
        spoken = " ".join(text.format_map(_Placeholders(self, now, values)).split())
        # A time that ends a sentence ("tomorrow at 8 a.m.") keeps one full stop, not two.
        return _DOUBLED_STOP.sub(r"\1.m.", spoken)

    def service_value(self, name: str, now: dt.datetime) -> str | None:
        """The service's own placeholder `name` as spoken now; None for a name that is not one of them."""
        if name == "service_name":
            return self.settings.service.name
        if name == "opening_hours":
            return self.hours.spoken_summary()
        if name == "next_opening":
            return self.spoken_next_opening(now)
        if name == "callback_number":
            return self.spoken_callback_number()
        if name in ("position", "wait"):
            return ""  # the queue's own, given by the prompt that says them
        return None

    def spoken_callback_number(self) -> str:
        """The number callbacks come from (twilio.callback_caller_id, else the helpline's own), as it
        would be read out: a UK number in its national form and groups, "0 3 3 0, 0 0 0, 0 0 0 0".

        Callers are told it so that they know the call is us, and are never promised a withheld number.
        """
        number = self.settings.twilio.callback_number
        if not number:
            return "this helpline's own number"
        digits = "0" + number[3:] if number.startswith("+44") else number.lstrip("+")
        groups = [digits[:4], digits[4:7], digits[7:]] if number.startswith("+44") else [digits]
        spoken = ", ".join(" ".join(group) for group in groups if group)
        return spoken if number.startswith("+44") else f"plus {spoken}"

    def spoken_next_opening(self, now: dt.datetime) -> str:
        """When the line next opens, as words: "tomorrow at 8 a.m.", "on Monday 28 December at 8 a.m."."""
        opening = self.hours.next_opening(now)
        return "as soon as we can" if opening is None else self.hours.say_when(opening, now)

    # -- the record ---------------------------------------------------------------------------

    @staticmethod
    def log(session: Session, call: Call, kind: str, step: str | None, **detail: Any) -> None:
        """Add a line to the call's timeline."""
        append(session, CallEvent, call_id=call.id, kind=kind, step=step, detail=detail)

    def _path(self, call: Call, entry: dict[str, Any]) -> None:
        call.ivr_path = [*call.ivr_path, {**entry, "at": utcnow().isoformat()}]

    def keep_caller(self, call: Call, raw_from: str | None) -> None:
        """Store the caller's number, encrypted, with its keyed hash: only once they need us to have it."""
        if call.caller_number_status == "dropped":
            return
        parsed = parse_caller(raw_from)
        call.caller_number_status = parsed.status
        if parsed.e164:
            call.caller_number_enc = self.vault.encrypt(parsed.e164)
            call.caller_hash = self.vault.keyed_hash(parsed.e164)

    @staticmethod
    def forget_caller(call: Call) -> None:
        """Drop every trace of who called: no number, encrypted or hashed, remains."""
        call.caller_number_status = "dropped"
        call.caller_number_enc = None
        call.caller_hash = None

    def settle(self, session: Session, call: Call, outcome: str, step: str | None) -> None:
        """Record how the call ended, once: the first outcome stands."""
        lifecycle.settle(session, call, outcome, step)

    # -- walking the flow ---------------------------------------------------------------------

    def start(self, session: Session, call: Call, form: Mapping[str, str]) -> str:
        """The first answer to a new call."""
        call.caller_number_status = parse_caller(form.get("From")).status
        return self.enter(session, call, self.flow.start, form)

    def enter(self, session: Session, call: Call, name: str, form: Mapping[str, str], attempt: int = 1,
              ahead: str = "") -> str:
        """Move the call to step `name` and return what the caller hears there.

        `ahead` holds keys the caller typed ahead into an earlier menu's Gather and not yet used:
        a menu that takes keys typed ahead answers with them at once (the caller never hears it),
        an `hours` step passes them on, and any other step drops them (what it says must be heard).
        """
        now = utcnow()
        step = self.flow.step(name)
        call.step = name
        self._path(call, {"step": name} if attempt == 1 else {"step": name, "attempt": attempt})
        if attempt == 1:
            self.log(session, call, "step", name)
        voice = self.voice
        if step.type == "hours":
            target = step.open if self.hours.is_open(now) else step.closed
            return self.enter(session, call, target or "", form, ahead=ahead)
        if ahead and step.type == "menu" and step.type_ahead:
            return self.keys(session, call, name, attempt, ahead, form, typed_ahead=True)
        if ahead:
            self.log(session, call, "keys_dropped", name, keys=ahead)
        if step.type == "say":
            return twiml.speak_then_redirect(voice, self.render(step.say or "", now), self.step_url(call, step.next or ""))
        if step.type == "menu":
            return self._menu(call, step, attempt, now, form)
        if step.type == "hangup":
            if step.forget_caller:
                self.forget_caller(call)
            self.settle(session, call, step.outcome or "ended", name)
            return twiml.speak_and_hang_up(voice, self.render(step.say or "", now))
        if step.type == "callback":
            return self._callback(session, call, step, form, now)
        return self._queue(session, call, step, form, now)

    def keys(self, session: Session, call: Call, name: str, attempt: int, digits: str, form: Mapping[str, str],
             speech: str = "", typed_ahead: bool = False) -> str:
        """The caller pressed `digits` (or said `speech`, or nothing) at menu `name` after `attempt` prompts.

        The first key answers this menu; any more were typed ahead, and go on to the menus that
        follow (see `enter`). Words count only when no key was pressed, and only as one of the
        menu's keys' `words`.
        """
        step = self.flow.step(name)
        if step.type != "menu":
            return self.enter(session, call, call.step or self.flow.start, form)
        heard: dict[str, Any] = {}
        if not digits and speech and step.speech:
            digits = self.flow.key_for(step, speech) or ""
            # What was said is not kept: only whether it matched, and the key it stood for.
            heard = {"spoken": True}
            if not digits:
                self.log(session, call, "speech_not_understood", name, attempt=attempt)
        elif typed_ahead:
            heard = {"typed_ahead": True}
        key, rest, menu_keys = digits[:1], digits[1:], self.flow.menu_keys
        if key and key == menu_keys.repeat:
            # Hear the menu again: it does not count as a try.
            self.log(session, call, "repeat", name, attempt=attempt)
            return self.enter(session, call, name, form, attempt=attempt)
        if key and key == menu_keys.back:
            return self._back(session, call, name, attempt, rest, form)
        speak_now = menu_keys.speak_now
        if key and speak_now is not None and key == speak_now.key and self._speak_now_here(call, name):
            self._path(call, {"step": name, "key": key})
            self.log(session, call, "key", name, key=key, speak_now=True, **heard)
            for answer, flag in speak_now.unconfirmed.items():
                if answer not in call.answers and flag not in call.flags:
                    call.flags = [*call.flags, flag]
            if speak_now.need and call.need is None:
                call.need = speak_now.need
            return self.enter(session, call, self.queue_step().name, form, ahead=rest)
        action = step.keys.get(key) if key else None
        if action is not None:
            self._path(call, {"step": name, "key": key})
            self.log(session, call, "key", name, key=key, **heard)
            return self._act(session, call, action, form, ahead=rest)
        self.log(session, call, "no_input" if not digits and not speech else "invalid_key", name, attempt=attempt)
        if attempt < step.attempts:
            return self.enter(session, call, name, form, attempt=attempt + 1)
        self._path(call, {"step": name, "key": None})
        assert step.no_input is not None  # guaranteed by the flow check
        return self._act(session, call, step.no_input, form)

    def _back(self, session: Session, call: Call, name: str, attempt: int, rest: str,
              form: Mapping[str, str]) -> str:
        """The back key: return to the menu answered before this one, to answer it again.

        Its answer stands until it is answered again (a caller going back from "not eligible" to
        eligibility and pressing 1 replaces it). At the first menu there is nothing before: the
        menu plays again, as the repeat key would. Keys typed after it carry on from there.
        """
        previous = self.previous_menu(call, name)
        self._path(call, {"step": name, "key": self.flow.menu_keys.back, "back": True})
        self.log(session, call, "back", name, to=previous)
        if previous is None:
            return self.enter(session, call, name, form, attempt=attempt)
        return self.enter(session, call, previous, form, ahead=rest)

    def previous_menu(self, call: Call, name: str) -> str | None:
        """The menu the caller answered before reaching menu `name`, going back as often as they
        have pressed the back key; None at the first menu."""
        answered: list[str] = []
        for entry in call.ivr_path:
            if "key" not in entry:
                continue  # arriving at a step; a menu counts once it is answered (or left unanswered)
            if entry.get("back"):
                while answered and answered[-1] == entry["step"]:
                    answered.pop()
                if answered:
                    answered.pop()
            elif self.flow.steps.get(entry["step"]) is not None:
                answered.append(entry["step"])
        while answered and answered[-1] == name:
            answered.pop()
        return answered[-1] if answered else None

    def current(self, call: Call, form: Mapping[str, str] | None = None) -> str:
        """What the caller hears at the step they are at now, changing nothing: the answer to a key
        pressed at a step the call has already left (a late or replayed request), which must neither
        rewrite an answer nor move the call."""
        now = utcnow()
        name = call.step if call.step in self.flow.steps else self.flow.start
        for _hop in range(len(self.flow.steps)):
            step = self.flow.step(name)
            if step.type != "hours":
                break
            name = (step.open if self.hours.is_open(now) else step.closed) or self.flow.start
        voice = self.voice
        if step.type == "say":
            return twiml.speak_then_redirect(voice, self.render(step.say or "", now), self.step_url(call, step.next or ""))
        if step.type == "menu":
            last = call.ivr_path[-1] if call.ivr_path else {}
            attempt = int(last.get("attempt", 1)) if last.get("step") == name and "key" not in last else 1
            return self._menu(call, step, attempt, now, form or {})
        if step.type in ("hangup", "callback"):
            return twiml.speak_and_hang_up(voice, self.render(step.say or "", now))
        return twiml.enqueue(voice, self.render(step.say or "", now), self.settings.queue.name,
                             url_for("voice.queue_wait", n=len(call.ivr_path)),
                             url_for("voice.queue_left", n=len(call.ivr_path)))

    def may_redirect(self, call: Call, name: str) -> bool:
        """Whether a Redirect to step `name` is one the call's current step sends: to a say step's
        `next`, or to the step itself (a webhook retried after a fault, a caller sent back to the
        queue). A call not yet at a known step may go anywhere."""
        if call.step is None or call.step not in self.flow.steps or name == call.step:
            return True
        step = self.flow.step(call.step)
        return step.type == "say" and step.next == name

    def _act(self, session: Session, call: Call, action: Action, form: Mapping[str, str], ahead: str = "") -> str:
        self._record(call, action)
        return self.enter(session, call, action.goto, form, ahead=ahead)

    def _menu(self, call: Call, step: Step, attempt: int, now: dt.datetime, form: Mapping[str, str]) -> str:
        """A menu's Gather: its intro on the first visit, the retry words after a miss, the prompt;
        room for the keys a caller may type ahead; and the words it listens for."""
        text = self.render(step.prompt or "", now)
        if attempt > 1 and step.retry:
            text = f"{self.render(step.retry, now)} {text}"
        visits = sum(1 for entry in call.ivr_path if entry.get("step") == step.name and "key" not in entry)
        if step.intro and attempt == 1 and visits <= 1:
            text = f"{self.render(step.intro, now)} {text}"
        return twiml.menu(self.voice, text, self.keys_url(call, step.name, attempt), self.gather_timeout_s(form),
                          self.flow.keys_ahead(step.name), tuple(self.flow.hints(step)) if step.speech else None)

    def is_relay(self, form: Mapping[str, str]) -> bool:
        """Whether the call comes through a text relay service (its number starts with a relay
        prefix, such as Relay UK's 18001): an assistant reads the menus to the caller and types their answer."""
        digits = "".join(c for c in form.get("From", "") if c.isdigit())
        return any(digits.startswith(prefix) for prefix in self.settings.ivr.relay_prefixes)

    def gather_timeout_s(self, form: Mapping[str, str]) -> int:
        """How long a menu waits for a key: longer for a relay call, so the assistant can type."""
        ivr = self.settings.ivr
        return ivr.relay_gather_timeout_s if self.is_relay(form) else ivr.gather_timeout_s

    # -- leaving the IVR ----------------------------------------------------------------------

    def _callback(self, session: Session, call: Call, step: Step, form: Mapping[str, str], now: dt.datetime) -> str:
        self.keep_caller(call, form.get("From"))
        if call.caller_number_status != "valid":
            return self.enter(session, call, step.no_number or "", form)
        not_before = None if self.hours.is_open(now) else self.hours.next_opening(now)
        lifecycle.request_callback(session, call, step.keep_place, not_before, now)
        self.settle(session, call, step.outcome or "callback_requested", step.name)
        self.log(session, call, "callback_requested", step.name, keep_place=step.keep_place)
        return twiml.speak_and_hang_up(self.voice, self.render(step.say or "", now))

    def _queue(self, session: Session, call: Call, step: Step, form: Mapping[str, str], now: dt.datetime) -> str:
        self.keep_caller(call, form.get("From"))
        self._join_line(session, call, now)
        self.log(session, call, "queued", step.name, need=call.need, flags=list(call.flags))
        return twiml.enqueue(
            self.voice,
            self.render(step.say or "", now),
            self.settings.queue.name,
            url_for("voice.queue_wait", n=len(call.ivr_path)),
            url_for("voice.queue_left", n=len(call.ivr_path)),
        )

    def _join_line(self, session: Session, call: Call, placed_at: dt.datetime) -> QueueEntry:
        """Put the live caller in line (or back in their place), with the need and flags they gave."""
        return lifecycle.join_line(session, call, placed_at)

    # -- callers held while the database could not be written ---------------------------------

    def held_text(self, now: dt.datetime) -> str:
        """What a caller held through an outage hears: that they are in the queue, and the emergency advice."""
        emergency = self.flow.texts.get("emergency", "")
        return self.render(f"{HELD} {emergency}", now)

    def hold_in_outage(self, pending_step: str | None, pending_key: str | None) -> str:
        """TwiML for a caller whose answers cannot be recorded: into Twilio's queue, with a waitUrl.

        Built without the database. The waitUrl is what keeps the caller reachable: Twilio fetches it
        again after every stretch of hold music, and each fetch tries to record the caller and put
        them in line (`wait`, then `adopt`) until the database answers. It carries the moment they
        were held (their place in line among the others held) and the keys they pressed in the
        request that failed, so that nothing they chose is lost.
        """
        now = utcnow()
        held: dict[str, str] = {"held": str(int(now.timestamp() * 1000))}
        if pending_step and pending_key:
            held.update(step=pending_step, key=pending_key)
        return twiml.enqueue(self.voice, self.held_text(now), self.settings.queue.name,
                             url_for("voice.queue_wait", **held), url_for("voice.queue_left", held=held["held"]))

    def hold_music_in_outage(self) -> str:
        """A waitUrl's answer while the database is away: the advice, then one stretch of music, after
        which Twilio asks the waitUrl again (it never needs the database to say this)."""
        return twiml.hold(self.voice, self.held_text(utcnow()), self.music_url(), 1, None)

    def adopt(self, session: Session, call: Call, placed_at: dt.datetime, from_number: str | None,
              pending_step: str | None = None, pending_key: str | None = None, source: str = "wait") -> QueueEntry:
        """Put in line a caller Twilio holds in its queue whom the service has no place in line for.

        That is a caller held while the database could not be written (`hold_in_outage`), found by
        their waitUrl or by reconciliation with Twilio. The keys pressed in the request that failed
        are applied if they were pressed at the step the call is at (those typed ahead answering the
        menus after it, as `keys` would take them); from there the flow is followed as if
        the caller had pressed nothing (each menu's `no_input`), which records the flags the flow
        gives an unanswered question (self-referral or eligibility unconfirmed, for a handler to ask
        by voice) and the need it assumes. The caller's place is `placed_at`, when they were held.
        """
        name = call.step if call.step in self.flow.steps else self.flow.start
        now = utcnow()
        applied = ""
        step = self.flow.steps.get(pending_step or "")
        if step is not None and step.type == "menu" and pending_step == name and pending_key:
            # The keys pressed at that menu, and those typed ahead for the menus after it, as `keys` would take them.
            for key in pending_key:
                step = self.flow.step(name)
                action = step.keys.get(key) if step.type == "menu" and (not applied or step.type_ahead) else None
                if action is None or not self._reaches_queue(action.goto):
                    break
                self._path(call, {"step": name, "key": key})
                self.log(session, call, "key", name, key=key, recovered=True)
                self._record(call, action)
                name, applied = action.goto, applied + key
                for _hop in range(len(self.flow.steps)):
                    hours = self.flow.step(name)
                    if hours.type != "hours":
                        break
                    name = (hours.open if self.hours.is_open(now) else hours.closed) or name
        for _hop in range(len(self.flow.steps)):
            step = self.flow.step(name)
            if step.type == "queue":
                break
            if step.type == "say" and step.next:
                name = step.next
            elif step.type == "hours":
                name = (step.open if self.hours.is_open(now) else step.closed) or name
                if self.flow.step(name).type == "hangup":
                    break
            elif step.type == "menu" and step.no_input is not None:
                self._record(call, step.no_input)
                name = step.no_input.goto
            else:
                break
        queue = self.queue_step()
        self.keep_caller(call, from_number)
        call.step = queue.name
        self._path(call, {"step": queue.name})
        entry = self._join_line(session, call, placed_at)
        self.log(session, call, "queued", queue.name, need=call.need, flags=list(call.flags), held=True,
                 source=source, key_recovered=applied or None)
        return entry

    def _speak_now_here(self, call: Call, name: str) -> bool:
        """Whether the speak-now key reaches a person at menu `name`: at a menu that leads to the
        line, and at one reached from such a menu (a confirmation before the call would end, where a
        caller asking for a person is put through rather than hung up on). Not out of hours."""
        if self._reaches_queue(name):
            return True
        previous = self.previous_menu(call, name)
        return previous is not None and self._reaches_queue(previous)

    def _reaches_queue(self, name: str) -> bool:
        """Whether the flow, followed with no key pressed, leads from step `name` to the queue."""
        seen: set[str] = set()
        while name not in seen and name in self.flow.steps:
            seen.add(name)
            step = self.flow.step(name)
            if step.type == "queue":
                return True
            if step.type == "say":
                name = step.next or ""
            elif step.type == "hours":
                name = step.open or ""
            elif step.type == "menu" and step.no_input is not None:
                name = step.no_input.goto
            else:
                return False
        return False

    @staticmethod
    def _record(call: Call, action: Action) -> None:
        """Record what an action says (answer, need, flag) without moving the call."""
        if action.answer:
            call.answers = {**call.answers, **action.answer}
        if action.need:
            call.need = action.need
        if action.flag and action.flag not in call.flags:
            call.flags = [*call.flags, action.flag]

    def queue_step(self) -> Step:
        """The flow's queue step (its announcements and callback key)."""
        return next(step for step in self.flow.steps.values() if step.type == "queue")

    def wait(self, session: Session, call: Call, form: Mapping[str, str]) -> str:
        """One stretch of waiting: where they are in line, the wait to expect, then hold music."""
        now = utcnow()
        step = self.queue_step()
        entry = call.queue_entry
        if entry is None and call.ended_at is None:
            # Twilio holds them in its queue and we have no place in line for them: they were held
            # while the database could not be written. Record them and put them in line now.
            entry = self.adopt(session, call, _held_since(form, call, now), form.get("From"),
                               form.get("held_step"), form.get("held_key"))
        if entry is None or entry.state not in routing.IN_LINE:
            # Not (or no longer) in our line: keep them waiting rather than lose them.
            return twiml.hold(self.voice, "Please hold.", self.music_url(), 1, None)
        place = routing.position(session, entry, now)
        fallback_at = entry.placed_at + dt.timedelta(seconds=self.settings.routing.skill_fallback_after_s)
        wait_s = routing.estimated_wait_s(session, place, now, self.settings.queue.default_wait_estimate_s, entry.need,
                                          (fallback_at - now).total_seconds(), tuple(entry.declined_by or ()))
        waited = (now - (call.queued_at or now)).total_seconds()
        # What they were told, to set against the wait that follows (the benchmark's estimate error).
        append(session, CallEvent, call_id=call.id, kind=TOLD, at=now, detail={"place": place, "estimate_s": wait_s})
        if wait_s is None:
            # Nobody on duty: no time would be honest; say so, and offer the call-back now.
            text = self.render(step.announce.get("no_estimate", NO_ESTIMATE), now, position=place)
        else:
            text = self.render(step.announce["position"], now, position=place, wait=routing.spoken_wait(wait_s))
        callback_url = None
        offer_due = bool(step.callback_key) and (waited >= self.settings.queue.offer_callback_after_s or wait_s is None)
        if offer_due and self.can_call_back(call, form):
            text = f"{text} {self.render(step.announce['callback_offer'], now)}"
            callback_url = url_for("voice.queue_key", n=len(call.ivr_path))
        elif offer_due and "no_callback" in step.announce and not self._told_no_callback(session, call):
            # Others are offered a call-back now. This caller cannot be (a withheld number, or one we
            # cannot ring): rather than leave them wondering, say so once, beside the wait to expect.
            text = f"{self.render(step.announce['no_callback'], now)} {text}"
            self.log(session, call, NO_CALLBACK_TOLD, step.name, number=call.caller_number_status)
        loops = max(1, round(self.settings.queue.announce_every_s / HOLD_CLIP_S))
        return twiml.hold(self.voice, text, self.music_url(), loops, callback_url)

    @staticmethod
    def can_call_back(call: Call, form: Mapping[str, str]) -> bool:
        """Whether the caller's number is one the service can ring back: shown, valid, and a UK
        number (the service rings UK numbers only; a caller from abroad is not promised a call)."""
        parsed = parse_caller(form.get("From"))
        return (call.caller_number_status in ("valid", None) and parsed.status == "valid"
                and (parsed.e164 or "").startswith("+44"))

    @staticmethod
    def _told_no_callback(session: Session, call: Call) -> bool:
        """Whether this caller has already been told that they cannot be called back."""
        return session.scalar(select(CallEvent.id).where(CallEvent.call_id == call.id, CallEvent.kind == NO_CALLBACK_TOLD)
                              .limit(1)) is not None

    def queue_key(self, session: Session, call: Call, digits: str, form: Mapping[str, str]) -> str:
        """A key pressed while waiting: the callback key takes the caller out of the line politely."""
        step = self.queue_step()
        entry = call.queue_entry
        if digits[:1] != step.callback_key or entry is None or entry.state not in routing.IN_LINE:
            return twiml.empty()
        self._path(call, {"step": step.name, "key": digits[:1]})
        self.log(session, call, "key", step.name, key=digits[:1])
        call.answers = {**call.answers, "callback": "from_queue"}
        return twiml.leave_queue()

    def queue_left(self, session: Session, call: Call, result: str, form: Mapping[str, str]) -> str:
        """Twilio's Enqueue action: the caller has left the Twilio queue, for the reason `result`."""
        now = utcnow()
        step = self.queue_step()
        entry = call.queue_entry
        self.log(session, call, "left_queue", step.name, result=result)
        if result == "leave" and call.answers.get("callback") == "from_queue" and step.callback:
            return self.enter(session, call, step.callback, form)
        if result == "hangup":
            self.abandon(session, call, now)
            return twiml.empty()
        if result in ("bridged", "redirected", "redirected-from-bridged", "bridging-in-process"):
            return twiml.empty()
        # error, system-error, queue-full, or a leave we did not ask for: never drop the caller.
        return twiml.retry_later(self.voice, APOLOGY, url_for("voice.step", name=step.name, n=len(call.ivr_path)))

    def abandon(self, session: Session, call: Call, now: dt.datetime) -> None:
        """The caller hung up before being answered: record where, and their place if they were in line."""
        entry = call.queue_entry
        if entry is not None and entry.kind == "live" and entry.state in lifecycle.IN_LINE:
            holder = session.get(Handler, entry.handler_id, populate_existing=True) if entry.handler_id is not None else None
            lifecycle.caller_hung_up(session, entry, now, call=call, handler=holder)
        else:
            self.settle(session, call, "abandoned", call.step)

    # -- URLs ---------------------------------------------------------------------------------

    @staticmethod
    def step_url(call: Call, name: str) -> str:
        """Where Twilio fetches step `name`; `n` makes each visit's URL distinct for retry detection."""
        return url_for("voice.step", name=name, n=len(call.ivr_path))

    @staticmethod
    def keys_url(call: Call, name: str, attempt: int) -> str:
        """Where a menu's key (or silence) is sent."""
        return url_for("voice.step_keys", name=name, attempt=attempt, n=len(call.ivr_path))

    def music_url(self) -> str:
        """Hold music: the configured clip, or the service's own gentle tone."""
        if self.settings.queue.hold_music_url:
            return self.settings.queue.hold_music_url
        return self.settings.public_url + url_for("static", filename="hold-music.wav")


def _held_since(form: Mapping[str, str], call: Call, now: dt.datetime) -> dt.datetime:
    """When a caller found in Twilio's queue was put there: the `held` moment the outage TwiML wrote
    into their waitUrl, else Twilio's QueueTime; never before the call began, nor in the future."""
    held = form.get("held", "")
    if held.isdigit():
        since = dt.datetime.fromtimestamp(int(held) / 1000, dt.timezone.utc)
    else:
        waited = form.get("QueueTime", "")
        since = now - dt.timedelta(seconds=int(waited)) if waited.isdigit() else now
    if call.step is None and not call.ivr_path:
        # A record made just now by this very request: the call began before it, when it was held.
        call.started_at = min(call.started_at or since, since)
    earliest = call.started_at or since
    return min(max(since, earliest), now)


class _Placeholders(dict):  # type: ignore[type-arg]
    """A prompt's placeholder values, each worked out when the prompt first names it: most prompts
    name one or two, and the next opening alone reads the calendar.

    A flow text is filled the same way, except that a name it does not know is left empty (as is a
    text that names itself, through others); a name the prompt itself does not know is an error,
    which the flow's check at start-up rules out.
    """

    def __init__(self, interpreter: Interpreter, now: dt.datetime, values: dict[str, Any]):
        super().__init__(values)
        self.interpreter, self.now = interpreter, now
        self._filling: set[str] = set()

    def __missing__(self, name: str) -> Any:
        value = self.interpreter.service_value(name, self.now)
        if value is None:
            text = self.interpreter.flow.texts.get(name)
            if text is None or name in self._filling:
                raise KeyError(name)
            self._filling.add(name)
            try:
                value = text.format_map(_InText(self))
            finally:
                self._filling.discard(name)
        self[name] = value
        return value


class _InText(Mapping[str, Any]):
    """A flow text's view of the placeholders: a name it does not know is left empty."""

    def __init__(self, placeholders: _Placeholders):
        self.placeholders = placeholders

    def __getitem__(self, name: str) -> Any:
        try:
            return self.placeholders[name]
        except KeyError:
            return ""

    def __iter__(self) -> Iterator[str]:
        return iter(self.placeholders)

    def __len__(self) -> int:
        return len(self.placeholders)
