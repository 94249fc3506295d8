"""The risk screen: a short set of yes/no questions the handler asks, a level, and what to do next.

Immediate risk alerts every supervisor at once (Socket.IO `alert` to the `supervisors` room, through
the event bus after the screen is committed). The alert names the call, the handler, the level and the
time, and nothing about the caller. The answers are kept encrypted; the level is kept in the clear
and on the call's timeline (a CallEvent of kind "risk").
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal, Optional

from flask import Flask
from pydantic import BaseModel, ConfigDict, StrictBool
from sqlalchemy import select
from sqlalchemy.orm import Session

from .crypto import Vault
from .db import append, db
from .events import announce
from .models import RISK_LEVELS, Call, CallEvent, RiskScreen, utcnow
from .realtime import socketio

log = logging.getLogger(__name__)

#: The event-bus topic a screen at immediate risk is announced on.
ALERT_TOPIC = "risk_alert"

ESCALATION: dict[str, list[str]] = {
    "immediate": [
        "Keep the caller on the line; do not end the call.",
        "If they are in immediate danger, call 999 now (or ask them to): ambulance, or police if there is a weapon or violence.",
        "If they are not in immediate danger, put them in touch with the local mental health crisis team: NHS 111, option 2.",
        "A supervisor has been alerted and will join you; follow their lead.",
        "Stay calm, listen, and ask where they are and who is with them.",
    ],
    "moderate": [
        "Talk to a supervisor before the call ends.",
        "Offer the earliest appointment, and agree how they will keep safe until then.",
        "Give the crisis numbers: NHS 111 option 2, Samaritans 116 123, and 999 in an emergency.",
    ],
    "low": [
        "Book an appointment and give the crisis numbers: NHS 111 option 2, Samaritans 116 123, 999 in an emergency.",
    ],
    "none": [
        "Carry on with the first-contact record and booking.",
    ],
}


class RiskAnswers(BaseModel):
    """The screen's questions, all to be answered yes (true) or no (false)."""

    model_config = ConfigDict(extra="forbid")

    #: Are you having thoughts of suicide or of harming yourself now?
    thoughts_of_suicide_or_self_harm: StrictBool
    #: Have you made a plan, or do you have the means to hand?
    plan_or_means: StrictBool
    #: Are you in danger right now (harmed yourself, or about to)?
    immediate_danger: StrictBool
    #: Have you been drinking or taken drugs today?
    intoxicated_now: StrictBool
    #: Have you harmed yourself recently?
    recent_self_harm: StrictBool
    #: Is there someone or something helping you keep safe?
    protective_factors: StrictBool
    #: The handler's own judgement; it can raise the level, never lower it.
    handler_concern: Optional[Literal["none", "low", "moderate", "immediate"]] = None


def assess(answers: RiskAnswers) -> str:
    """The level the answers point to: none, low, moderate or immediate (erring towards the higher)."""
    thoughts, plan = answers.thoughts_of_suicide_or_self_harm, answers.plan_or_means
    if answers.immediate_danger or (thoughts and plan and (answers.intoxicated_now or not answers.protective_factors)):
        level = "immediate"
    elif thoughts and (plan or answers.intoxicated_now or answers.recent_self_harm or not answers.protective_factors):
        level = "moderate"
    elif thoughts or answers.recent_self_harm or answers.intoxicated_now:
        level = "low"
    else:
        level = "none"
    if answers.handler_concern and RISK_LEVELS.index(answers.handler_concern) > RISK_LEVELS.index(level):
        level = answers.handler_concern
    return level


def record(session: Session, vault: Vault, call: Call, handler_user_id: int, handler_name: str,
           answers: RiskAnswers) -> RiskScreen:
    """Keep the screen, put it on the call's timeline, and announce an alert if the risk is immediate."""
    level = assess(answers)
    now = utcnow()
    screen = RiskScreen(call_id=call.id, at=now, handler_user_id=handler_user_id, level=level,
                        answers_enc=vault.encrypt(json.dumps(answers.model_dump(), sort_keys=True)) or "")
    session.add(screen)
    session.flush()
    append(session, CallEvent, call_id=call.id, at=now, kind="risk",
           detail={"level": level, "screen_id": screen.id, "handler_user_id": handler_user_id})
    if level == "immediate":
        announce(session, ALERT_TOPIC, **alert_payload(call.id, handler_user_id, handler_name, level, now.isoformat()))
    return screen


def alert_payload(call_id: int, handler_user_id: int, handler_name: str, level: str, at: str,
                  source: str = "risk_screen") -> dict[str, Any]:
    """The supervisors' alert: which call, whose, how urgent, since when, and what raised it (the risk
    screen, or a questionnaire answer: "phq9"); nothing about the caller."""
    return {"kind": "risk", "call_id": call_id, "handler": {"id": handler_user_id, "name": handler_name},
            "level": level, "at": at, "source": source}


def latest(session: Session, vault: Vault, call_id: int) -> Optional[dict[str, Any]]:
    """The call's most recent screen, answers included, for those who may see the record."""
    screen = session.scalar(select(RiskScreen).where(RiskScreen.call_id == call_id).order_by(RiskScreen.id.desc()).limit(1))
    if screen is None:
        return None
    return {"level": screen.level, "at": screen.at.isoformat(), "answers": json.loads(vault.decrypt(screen.answers_enc) or "{}")}


def _emit_alert(**alert: Any) -> None:
    socketio.emit("alert", alert, to="supervisors", namespace="/console")


def init_app(app: Flask) -> None:
    """Send committed immediate-risk alerts to the supervisors' room."""
    db.bus.subscribe(ALERT_TOPIC, _emit_alert)
