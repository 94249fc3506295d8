"""Self-referral and call-back requests made on the public pages: the web twin of the phone menu.

The same gates as the IVR, in the same words (the flow's `texts`): a request about someone else, or
from someone the service cannot see, is answered kindly and nothing of anyone is kept. Otherwise the
request joins the same line as phone callers: a `Call` with channel "web" and a call-back `QueueEntry`
placed when it was made, routed by the same rules and rung back through the same callback path
(connect.py), not before a time they said is safe. What they wrote is kept encrypted with the call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Optional

from flask import current_app
from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema, field_validator
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .. import lifecycle, presence
from ..db import append, db
from ..states import Presence
from ..events import announce
from ..reports import WEB_ALERT_HANDLER
from ..risk import ALERT_TOPIC
from ..models import Call, CallEvent, Handler, PublicSubmission, QueueEntry, utcnow
from ..phone import normalise

NEEDS = ("mental_health", "addiction", "return_to_work", "other")
#: The windows the form offers for "when is it safe to call you", in the helpline's local time
#: (minutes after midnight). The line's own hours still apply on top.
SAFE_WINDOWS: dict[str, tuple[int, int]] = {
    "morning": (8 * 60, 12 * 60),
    "afternoon": (12 * 60, 17 * 60),
    "evening": (17 * 60, 20 * 60),
}
#: "HH:MM-HH:MM", a window given by the JSON API instead of a name.
_SPAN = re.compile(r"^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-4]):([0-5]\d)\s*$")
#: How finely the first safe moment is searched for, and how far ahead.
_STEP = dt.timedelta(minutes=5)
_HORIZON = dt.timedelta(days=8)
#: Requests one client address may send in `RATE_WINDOW` (every answer counts, kept or not).
RATE_LIMIT = 5
RATE_WINDOW = dt.timedelta(hours=1)
#: Letters for references: no 0/O, 1/I/L, so that one can be read over the phone.
_REFERENCE_LETTERS = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
#: The flag a request carries when the person said they are not safe now.
AT_RISK_FLAG = "not_safe_now"
#: Priority of a request at immediate risk: ahead of every ordinary place in line (default 100).
AT_RISK_PRIORITY = 0


#: What the OpenAPI document says of a phone number and an email address here: one (`format: phone` is
#: a number phonenumbers takes as valid for its country, UK by default), or blank, or null.
_BLANK = {"type": "string", "pattern": r"^\s*$", "maxLength": 32}
PHONE_SCHEMA = {"anyOf": [{"type": "string", "format": "phone", "maxLength": 32}, _BLANK, {"type": "null"}]}
EMAIL_SCHEMA = {"anyOf": [{"type": "string", "format": "email", "maxLength": 254}, _BLANK, {"type": "null"}]}


class Contact(BaseModel):
    """How and when it is safe to contact them."""

    model_config = ConfigDict(extra="forbid")

    phone: Annotated[Optional[str], WithJsonSchema(PHONE_SCHEMA)] = Field(default=None, max_length=32)
    email: Annotated[Optional[str], WithJsonSchema(EMAIL_SCHEMA)] = Field(default=None, max_length=254)
    safe_to_text: StrictBool = False
    safe_for_voicemail: StrictBool = False
    #: Named windows ("morning, evening"), "HH:MM-HH:MM" spans, or words for the handler to read.
    safe_times: str = Field(default="", max_length=200)
    #: How they would like us to reply: "phone" (a call back) or "email"; by default, phone if given.
    contact_by: Optional[Literal["phone", "email"]] = None

    @field_validator("phone", "email", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value


#: The three requests the service answers, as the OpenAPI document states them (`validate` is the rule
#: in code): about someone else; about themselves but not eligible; or a request that joins the line,
#: which needs every answer, a way to reach them that they chose, and their consent.
_TAKEN_CONTACT = {"type": "object", "anyOf": [
    # a call back on a phone number (the default when one is given)
    {"required": ["phone"], "properties": {"phone": {"type": "string", "format": "phone"},
                                           "contact_by": {"enum": ["phone", None]}}},
    # an email reply, asked for
    {"required": ["email", "contact_by"], "properties": {"email": {"type": "string", "format": "email"},
                                                         "contact_by": {"const": "email"}}},
    # an email address and no phone number
    {"required": ["email"], "properties": {"email": {"type": "string", "format": "email"},
                                           "phone": {"anyOf": [_BLANK, {"type": "null"}]},
                                           "contact_by": {"type": "null"}}},
]}
REFERRAL_CASES = {"anyOf": [
    {"required": ["about"], "properties": {"about": {"const": "someone_else"}}},
    {"required": ["about", "eligible"], "properties": {"about": {"const": "self"}, "eligible": {"const": False}}},
    {"required": ["about", "eligible", "need", "contact", "consent"],
     "properties": {"about": {"const": "self"}, "eligible": {"const": True}, "need": {"type": "string"},
                    "contact": _TAKEN_CONTACT, "consent": {"const": True}}},
]}


class Referral(BaseModel):
    """POST /api/self-referrals (and the web form's answers, gathered page by page)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=REFERRAL_CASES)

    about: Literal["self", "someone_else"]
    eligible: Optional[StrictBool] = None
    need: Optional[Literal["mental_health", "addiction", "return_to_work", "other"]] = None
    #: "Are you safe right now?": False shows emergency advice at once and alerts supervisors.
    safe_now: Optional[StrictBool] = None
    contact: Optional[Contact] = None
    preferred_name: str = Field(default="", max_length=60)
    message: str = Field(default="", max_length=1000)
    consent: StrictBool = False
    #: The honeypot: a field people never see (hidden from screen readers too) and bots fill in.
    website: str = Field(default="", max_length=200)


class Refused(Exception):
    """A request that cannot be taken as it is; the pages and the API say `problems` to the person."""

    def __init__(self, problems: list[dict[str, str]]):
        super().__init__("; ".join(p["problem"] for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class Outcome:
    """What became of a request: `third_party` or `ineligible` (nothing kept), or `requested`."""

    outcome: str
    message: str = ""
    reference: str = ""
    at_risk: bool = False
    #: For a request: when it first may be answered, in words ("tomorrow at 8 a.m.", OpeningHours.say_when),
    #: if not now (the line closed, or outside the times the person said are safe); None when it is in line now.
    earliest: str | None = None


def _email_ok(text: str) -> bool:
    """A plausible address (one @, a dotted domain, no spaces); the reply itself is the real check."""
    return bool(re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", text))


def parse_safe_times(text: str) -> list[tuple[int, int]]:
    """The windows `text` names, as (start, end) minutes; [] for none recognised (any time we are open).

    Words it does not recognise are not refused: they are kept for the handler, who reads them.
    """
    spans: list[tuple[int, int]] = []
    for part in re.split(r"[,;]| and ", text.lower()):
        part = part.strip()
        if part in SAFE_WINDOWS:
            spans.append(SAFE_WINDOWS[part])
            continue
        match = _SPAN.match(part)
        if match:
            start = int(match.group(1)) * 60 + int(match.group(2))
            end = int(match.group(3)) * 60 + int(match.group(4))
            if end > start:
                spans.append((start, min(end, 24 * 60)))
    return sorted(set(spans))


def in_window(local: dt.datetime, spans: list[tuple[int, int]]) -> bool:
    """Whether a local wall-clock time is inside one of the windows (all day when there are none)."""
    minute = local.hour * 60 + local.minute
    return not spans or any(start <= minute < end for start, end in spans)


def first_safe_moment(hours: Any, spans: list[tuple[int, int]], now: dt.datetime) -> Optional[dt.datetime]:
    """The first instant from `now` when the line is open and it is safe to call; None if that is now.

    Searched on the clock's five-minute marks over the next eight days (so that the moment a person
    is told is "8am", not "8:01am"): simple, and correct across the clocks changing. With no such
    moment (windows that never meet the hours) the line's next opening is used.
    """
    moment = now
    while moment - now <= _HORIZON:
        if hours.is_open(moment) and in_window(hours.local(moment), spans):
            return None if moment == now else moment
        mark = moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)
        moment = mark + _STEP
    return None if hours.is_open(now) else hours.next_opening(now)


def validate(referral: Referral) -> None:
    """Raise Refused with every problem of a request that reaches the line (self, eligible)."""
    problems: list[dict[str, str]] = []
    if referral.eligible is None:
        problems.append({"field": "eligible", "problem": "say whether the service is for you"})
    if referral.need is None:
        problems.append({"field": "need", "problem": "choose what you would like help with"})
    contact = referral.contact
    if contact is None or not (contact.phone or contact.email):
        problems.append({"field": "contact", "problem": "give a phone number or an email address"})
    else:
        if contact.phone:
            try:
                normalise(contact.phone)
            except ValueError as exc:
                problems.append({"field": "contact.phone", "problem": f"the phone number is {exc}"})
        if contact.email and not _email_ok(contact.email):
            problems.append({"field": "contact.email", "problem": "enter an email address like name@example.com"})
        how = contact.contact_by or ("phone" if contact.phone else "email")
        if how == "phone" and not contact.phone:
            problems.append({"field": "contact.phone", "problem": "give a phone number for us to call you on"})
        if how == "email" and not contact.email:
            problems.append({"field": "contact.email", "problem": "give an email address for us to reply to"})
    if not referral.consent:
        problems.append({"field": "consent", "problem": "we need your agreement to keep these details and contact you"})
    if problems:
        raise Refused(problems)


def new_reference() -> str:
    """A short reference the person can quote ("PH-4K7QXM2A"); it says nothing about them."""
    return "PH-" + "".join(secrets.choice(_REFERENCE_LETTERS) for _ in range(8))


def address_key(address: str) -> str:
    """A keyed hash of a client address: enough to count requests from it, useless to identify it."""
    key = str(current_app.config["SECRET_KEY"]).encode()
    return hmac.new(key, b"public request\0" + address.encode(), hashlib.sha256).hexdigest()


def rate_limited(session: Session, address: str, now: dt.datetime) -> bool:
    """Count this request against its address; True when the address has sent too many already.

    Counted in the database (as failed log-ins are, security.py): every process shares it, and the
    marks older than the window are dropped here, so the table stays small.
    """
    key = address_key(address)
    session.execute(delete(PublicSubmission).where(PublicSubmission.at < now - RATE_WINDOW))
    recent = session.scalar(select(func.count()).select_from(PublicSubmission).where(
        PublicSubmission.address_hash == key, PublicSubmission.at >= now - RATE_WINDOW)) or 0
    if recent >= RATE_LIMIT:
        return True
    session.add(PublicSubmission(address_hash=key, at=now))
    return False


def gate_text(name: str, now: dt.datetime) -> str:
    """One of the flow's shared texts (the IVR says the same words at the same gate)."""
    interpreter = current_app.extensions["helpline.ivr"]
    return interpreter.render("{" + name + "}", now)


def submit(session: Session, referral: Referral, now: dt.datetime) -> Outcome:
    """Answer the request; when it reaches the line, add it (the caller commits).

    About someone else, or not eligible: the shared words, and nothing is written (not even a count
    by outcome, which would say when someone asked). A filled honeypot gets a reference as if all
    were well, and nothing is written either: a bot learns nothing from the answer.
    """
    if referral.about == "someone_else":
        return Outcome("third_party", gate_text("someone_else", now))
    if referral.eligible is False:
        return Outcome("ineligible", gate_text("signposting", now))
    validate(referral)
    if referral.website.strip():
        return Outcome("requested", reference=new_reference())
    assert referral.contact is not None and referral.need is not None
    vault = current_app.extensions["helpline.vault"]
    hours = current_app.extensions["helpline.ivr"].hours
    contact = referral.contact
    how = contact.contact_by or ("phone" if contact.phone else "email")
    phone = normalise(contact.phone) if contact.phone else None
    spans = parse_safe_times(contact.safe_times)
    at_risk = referral.safe_now is False
    reference = new_reference()
    call = Call(
        call_sid=f"web-{reference}", channel="web", started_at=now, step="web_request",
        caller_number_status="valid" if phone else "withheld",
        caller_number_enc=vault.encrypt(phone) if phone else None,
        caller_hash=vault.keyed_hash(phone) if phone else None,
        answers={"about": "self", "eligible": "yes", "safe_to_text": contact.safe_to_text,
                 "safe_for_voicemail": contact.safe_for_voicemail, "contact_by": how,
                 **({"safe_now": referral.safe_now} if referral.safe_now is not None else {})},
        need=referral.need, flags=[AT_RISK_FLAG] if at_risk else [],
        outcome="callback_requested", outcome_step="web_request",
        request_enc=vault.encrypt(json.dumps({
            "reference": reference, "contact_by": how, "email": contact.email or "",
            "preferred_name": referral.preferred_name.strip(), "message": referral.message.strip(),
            "safe_times": contact.safe_times.strip(), "windows": [list(span) for span in spans],
        })),
    )
    session.add(call)
    session.flush()
    entry = lifecycle.request_callback(session, call, keep_place=False, not_before=first_safe_moment(hours, spans, now),
                                       now=now, kind="callback" if how == "phone" else "email")
    entry.priority = AT_RISK_PRIORITY if at_risk else 100
    append(session, CallEvent, call_id=call.id, at=now, kind="web_request", step="web_request",
           detail={"channel": "web", "contact_by": how, "windows": [list(span) for span in spans],
           "not_before": entry.not_before.isoformat() if entry.not_before else None})
    if at_risk:
        append(session, CallEvent, call_id=call.id, at=now, kind="risk", detail={"level": "immediate", "source": "web_form"})
        announce(session, ALERT_TOPIC, kind="risk", call_id=call.id, handler={"id": None, "name": WEB_ALERT_HANDLER},
                 level="immediate", at=now.isoformat(), source="web_form")
    announce(session, "queue_changed")
    earliest = hours.say_when(entry.not_before, now) if entry.not_before else None
    return Outcome("requested", reference=reference, at_risk=at_risk, earliest=earliest)


def request_details(call: Call) -> dict[str, Any] | None:
    """What a web request said, for the handler working on it (decrypted); None for a phone call."""
    if call.channel != "web" or not call.request_enc:
        return None
    vault = current_app.extensions["helpline.vault"]
    return json.loads(vault.decrypt(call.request_enc) or "{}")


def hold_until_safe(session: Session, handler: Any, call_id: int, now: dt.datetime) -> Optional[dt.datetime]:
    """Keep a web call-back inside the times the person said are safe, at the moment it would be rung.

    A request waits out of line until its first safe moment (`not_before`), but it may still be in
    line when that window closes (nobody was free). Every minute such requests are held again
    (`hold_closed_windows`); one accepted in the minute between is not rung either: an offer of it
    is withdrawn, it waits for the next safe moment, and the time returned says until when. None
    when the call may be rung now (a phone call, no windows given, or inside one).
    """
    call = session.get(Call, call_id)
    if call is None or call.channel != "web" or not call.request_enc:
        return None
    entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call_id))
    if entry is None or entry.kind != "callback" or entry.state not in ("waiting", "offered"):
        return None
    return _hold_outside_window(session, call, entry, handler, now)


def hold_closed_windows(now: Optional[dt.datetime] = None) -> int:
    """Web call-backs in line whose safe window has closed leave it until their next safe moment;
    returns how many. Run every minute (periodic.py), so that a request nobody was free to ring
    while it was safe is not offered, nor shown first in line, when it may not be rung. An offer of
    one already made is withdrawn from its handler."""
    now = now or utcnow()
    held = 0
    with db.transaction() as session:
        waiting = session.execute(
            select(Call, QueueEntry).join(QueueEntry, QueueEntry.call_id == Call.id).where(
                Call.channel == "web", Call.request_enc.is_not(None), QueueEntry.kind == "callback",
                QueueEntry.state.in_(("waiting", "offered")),
                QueueEntry.not_before.is_(None) | (QueueEntry.not_before <= now))).all()
        for call, entry in waiting:
            handler = session.get(Handler, entry.handler_id) if entry.state == "offered" and entry.handler_id else None
            if handler is not None:
                presence.lock(session, handler)  # an accept crossing this waits its turn, and finds it held
            if _hold_outside_window(session, call, entry, handler, now) is not None:
                held += 1
    return held


def _hold_outside_window(session: Session, call: Call, entry: QueueEntry, handler: Any,
                         now: dt.datetime) -> Optional[dt.datetime]:
    """Outside the request's safe windows: hold it out of line until the next safe moment (taking
    back `handler`'s offer of it), and say until when; None inside one, or with no windows."""
    details = request_details(call) or {}
    spans = [(int(start), int(end)) for start, end in details.get("windows") or []]
    hours = current_app.extensions["helpline.ivr"].hours
    if not spans or in_window(hours.local(now), spans):
        return None
    later = first_safe_moment(hours, spans, now) or hours.next_opening(now) or now + _HORIZON
    if handler is not None and handler.presence == "offered" and handler.current_call_id == call.id:
        lifecycle.withdraw(session, handler, "outside_safe_times", now)
        presence.set_presence(session, handler, Presence.AVAILABLE, now)
    entry.not_before = later
    append(session, CallEvent, call_id=call.id, at=now, kind="held_until_safe", detail={"not_before": later.isoformat()})
    announce(session, "queue_changed")
    return later
