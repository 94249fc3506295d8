"""Request and response bodies of the queue, me and calls routes, as pydantic models.

Requests are validated with them (`api.body`); responses are described with them in /api/openapi.json.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ..routing import PRESENCES, SETTABLE, WRAP_UP_OUTCOMES


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class QueuedCall(BaseModel):
    """A call in line: no personal data."""

    id: int
    position: int
    waiting_s: int
    need: Optional[str]
    flags: list[str]
    #: "phone" for a call to the line, "web" for a call-back request from the public pages.
    channel: str = "phone"


class HandlerState(BaseModel):
    """A handler as every console sees them."""

    id: int
    name: str
    presence: Literal[PRESENCES]  # type: ignore[valid-type]
    since: str
    skills: list[str]


class QueueView(BaseModel):
    """The live queue and the handlers (also the `queue` Socket.IO event)."""

    calls: list[QueuedCall]
    handlers: list[HandlerState]


class OfferView(BaseModel):
    """A call offered to a handler (also the `offer` Socket.IO event)."""

    call_id: int
    need: Optional[str]
    flags: list[str]
    kind: Literal["live", "callback", "email"]
    waiting_s: int
    offered_at: str
    expires_at: str
    timeout_s: int


class Me(BaseModel):
    """Who is logged in, and for a handler their presence, skills, offer and call."""

    id: int
    username: str
    name: str
    role: str
    handler_id: Optional[int] = None
    presence: Optional[str] = None
    since: Optional[str] = None
    skills: list[str] = []
    languages: list[str] = []
    offer: Optional[OfferView] = None
    call_id: Optional[int] = Field(None, description="the call the handler is on or wrapping up")
    softphone: Optional[str] = Field(None, description="the Twilio client identity calls ring, unless a phone is set")


class StatusChange(_Body):
    """A handler setting their own presence."""

    status: Literal[SETTABLE]  # type: ignore[valid-type]


class Presence(BaseModel):
    """A handler's presence and since when."""

    presence: str
    since: str


class Accepted(BaseModel):
    """The call the handler now has, and what the caller said in the IVR."""

    call_id: int
    kind: Literal["live", "callback", "email"]
    conference: str
    ivr: "IvrView"


class IvrView(BaseModel):
    """What the caller said in the IVR, for the handler working the call."""

    call_id: int
    need: Optional[str]
    flags: list[str]
    answers: dict[str, Any]
    path: list[dict[str, Any]]
    waited_s: Optional[int]
    number_status: str


class Hold(_Body):
    """Hold the caller, or take them off hold."""

    hold: bool


class WrapUp(_Body):
    """The outcome of a call, which ends the handler's wrap-up."""

    outcome: Literal[WRAP_UP_OUTCOMES]  # type: ignore[valid-type]


class Done(BaseModel):
    """The request was carried out."""

    ok: bool = True


class VoiceToken(BaseModel):
    """How the console's softphone registers with Twilio's Voice SDK, or why it cannot."""

    mode: Literal["twilio", "unavailable"]
    identity: str
    token: Optional[str] = None
    ttl_s: Optional[int] = None
    #: host:port of the signalling to use instead of Twilio's edge (the local emulator), else absent.
    signalling: Optional[str] = None
    #: A page that, opened once, lets the browser trust the emulator's self-signed certificate.
    certificate_url: Optional[str] = None
    reason: Optional[str] = None


Accepted.model_rebuild()


class Consult(_Body):
    """Which supervisor the handler asks into the call (a user id from GET /api/supervisors/available)."""

    supervisor_id: int = Field(gt=0)


class ConsultStarted(BaseModel):
    """The supervisor's softphone is ringing into the call's conference; the caller is on hold."""

    call_id: int
    supervisor_id: int
    identity: str = Field(description="the Twilio client identity that rings")
    leg_sid: str


class SupervisorOnDuty(BaseModel):
    """A supervisor a handler may ask into a call."""

    id: int
    name: str


class Supervisors(BaseModel):
    """The supervisors a handler may ask into a call."""

    supervisors: list[SupervisorOnDuty]
