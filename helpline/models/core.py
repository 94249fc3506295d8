"""The helpline's records, as SQLAlchemy 2 typed models.

Models hold data and small derived facts only: views and services open sessions and commit. Personal
data is stored encrypted (see `crypto.py`); anything broadcast or logged uses the masked forms.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, WriteOnlyMapped, mapped_column, relationship, validates

from ..decision import language_asked


def utcnow() -> dt.datetime:
    """The current instant, aware, in UTC: every timestamp the service writes comes from here."""
    return dt.datetime.now(dt.timezone.utc)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """A timestamp stored in UTC and always read back aware (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[dt.datetime], dialect: Any) -> Optional[dt.datetime]:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use helpline.models.utcnow()")
        return value.astimezone(dt.timezone.utc)

    def process_result_value(self, value: Optional[dt.datetime], dialect: Any) -> Optional[dt.datetime]:
        if value is None:
            return None
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


# Constraint names are fixed so that migrations can name them on SQLite and PostgreSQL alike.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base for every table.

    A table's `info["pipelined"]` says how `ServiceSession.commit` (db.py) may write its rows without the ORM's
    flush (on PostgreSQL in the COMMIT's own round trip): "append" for rows only ever added, that
    nothing refers to and whose ids nobody reads (a call's timeline); "update" for rows whose
    changed columns may be written by primary key after the rest of the flush.
    """

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON}


ROLES = ("handler", "supervisor", "clinician", "admin")


class User(Base):
    """Someone who logs in to the console: a call handler, supervisor, clinician or administrator."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("oidc_issuer", "oidc_subject", name="uq_users_oidc_identity"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[Optional[dt.datetime]]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: When the password was last set; sessions started before a change are revoked by it.
    password_changed_at: Mapped[Optional[dt.datetime]]
    #: The TOTP secret (encrypted, base32); set at enrolment, in use once `totp_confirmed_at` is set.
    totp_secret_enc: Mapped[Optional[str]] = mapped_column(Text)
    totp_confirmed_at: Mapped[Optional[dt.datetime]]
    #: The last TOTP time step accepted, so that a code seen over a shoulder cannot be used again.
    totp_last_step: Mapped[Optional[int]]
    #: The identity provider's issuer and subject (`sub`) of the person who first signed in to this
    #: account through it (oidc.py): a later sign-in with the same username but another subject (a
    #: name or address given to someone else) is refused.
    oidc_issuer: Mapped[Optional[str]] = mapped_column(String(255))
    oidc_subject: Mapped[Optional[str]] = mapped_column(String(255))

    handler: Mapped[Optional["Handler"]] = relationship(back_populates="user", uselist=False)


class Handler(Base):
    """A call handler's routing state: presence, skills, and how long they have been idle."""

    __tablename__ = "handlers"
    __table_args__ = (
        Index("ix_handlers_presence_idle", "presence", "available_since"),
        {"info": {"pipelined": "update"}},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), unique=True)
    presence: Mapped[str] = mapped_column(String(16), default="offline")
    presence_since: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: When the handler last became free; the routing policy offers calls to the longest idle.
    available_since: Mapped[Optional[dt.datetime]]
    #: Needs this handler takes: mental_health, addiction, return_to_work; plus "dentist" knowledge.
    skills: Mapped[list[Any]] = mapped_column(default=list)
    languages: Mapped[list[Any]] = mapped_column(default=lambda: ["en"])
    #: Set when the handler takes calls on a phone rather than the browser softphone (encrypted E.164).
    phone_number_enc: Mapped[Optional[str]] = mapped_column(Text)
    #: The call offered to the handler, or the one they are on or wrapping up; None when free.
    current_call_id: Mapped[Optional[int]] = mapped_column(ForeignKey("calls.id", ondelete="SET NULL"))

    user: Mapped[User] = relationship(back_populates="handler")


class Call(Base):
    """One inbound call: its IVR path and answers, its wait, its Twilio status and its outcome.

    The caller's number is kept only encrypted, with a keyed hash beside it to recognise a returning
    caller, and only once they have said the call is about their own health.
    """

    __tablename__ = "calls"
    __table_args__ = {"info": {"pipelined": "update"}}

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), unique=True)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    ended_at: Mapped[Optional[dt.datetime]]
    #: valid, withheld, invalid, or dropped (third-party calls keep nothing)
    caller_number_status: Mapped[str] = mapped_column(String(16), default="withheld")
    caller_number_enc: Mapped[Optional[str]] = mapped_column(Text)
    #: The marker tells `helpline rotate-key` to recompute it under the new key (see keys.py).
    caller_hash: Mapped[Optional[str]] = mapped_column(String(64), index=True, info={"keyed_hash_of": "caller_number_enc"})
    #: The IVR step the caller is at now (the flow's step name).
    step: Mapped[Optional[str]] = mapped_column(String(64))
    #: Each step entered: [{"step", "at", "key"?}] in order.
    ivr_path: Mapped[list[Any]] = mapped_column(default=list)
    #: Answers the caller gave, by the flow's names: {"about": "self", "eligible": "yes", ...}.
    answers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    need: Mapped[Optional[str]] = mapped_column(String(32))
    flags: Mapped[list[Any]] = mapped_column(default=list)
    twilio_status: Mapped[Optional[str]] = mapped_column(String(16))
    #: The highest status-callback SequenceNumber applied; older ones arriving late are ignored.
    twilio_sequence: Mapped[int] = mapped_column(default=-1)
    duration_s: Mapped[Optional[int]]
    #: third_party, ineligible, out_of_hours, callback_requested, abandoned, answered, ...
    outcome: Mapped[Optional[str]] = mapped_column(String(32), index=True)
    #: The step at which the outcome was settled (where an abandoned caller hung up).
    outcome_step: Mapped[Optional[str]] = mapped_column(String(64))
    queued_at: Mapped[Optional[dt.datetime]]
    dequeued_at: Mapped[Optional[dt.datetime]]
    #: The door the person came in by: "phone" (a call to the line) or "web" (a call-back request made
    #: on the public pages, which has no Twilio call of its own until it is rung back).
    channel: Mapped[str] = mapped_column(String(16), default="phone", server_default="phone")
    #: What a web request said that has no column of its own (email, preferred name, their message,
    #: safe times, how to contact them), encrypted together as JSON; None for phone calls.
    request_enc: Mapped[Optional[str]] = mapped_column(Text)

    events: WriteOnlyMapped["CallEvent"] = relationship(
        back_populates="call", cascade="all, delete-orphan", passive_deletes=True, order_by="CallEvent.id"
    )
    queue_entry: Mapped[Optional["QueueEntry"]] = relationship(back_populates="call", uselist=False)


class CallEvent(Base):
    """One line of a call's timeline: a step entered, a key pressed, a status callback, an offer."""

    __tablename__ = "call_events"
    __table_args__ = {"info": {"pipelined": "append"}}

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    step: Mapped[Optional[str]] = mapped_column(String(64))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    call: Mapped[Call] = relationship(back_populates="events")


QUEUE_STATES = ("waiting", "offered", "connecting", "answered", "abandoned", "callback", "closed")


class QueueEntry(Base):
    """A caller's place in line: a live call waiting, or a callback request that keeps its place.

    `placed_at` fixes the place in line; a callback requested from the queue keeps the original one.
    `not_before` holds a callback back until the line opens.
    """

    __tablename__ = "queue_entries"
    __table_args__ = (
        UniqueConstraint("call_id", name="uq_queue_entries_call_id"),
        Index("ix_queue_entries_state_order", "state", "priority", "placed_at"),
        # Routing seeks the head of the line for one need at a time (see routing.py).
        Index("ix_queue_entries_state_need_order", "state", "need", "priority", "placed_at", "id"),
        # Routing seeks the first call of a need's line in each language a free handler speaks
        # (line_store.py), instead of walking past the calls in other languages.
        Index("ix_queue_entries_state_need_language_order", "state", "need", "language", "priority", "placed_at", "id"),
        {"info": {"pipelined": "update"}},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"))
    #: live (the caller is on the line) or callback (we ring them)
    kind: Mapped[str] = mapped_column(String(16), default="live")
    state: Mapped[str] = mapped_column(String(16), default="waiting")
    need: Mapped[Optional[str]] = mapped_column(String(32))
    flags: Mapped[list[Any]] = mapped_column(default=list)
    #: The language the flags ask for (decision.language_asked), None when they ask for none: set
    #: whenever the flags are (`_flags_set`), so that routing's SQL can seek the calls in a language
    #: (line_store.py). None is also "no condition" to that SQL, so a row written without it (a Core
    #: INSERT of the flags alone) is still routed right, only found less directly; the flags decide.
    language: Mapped[Optional[str]] = mapped_column(Text)
    #: Lower goes first; supervisors may move a call up.
    priority: Mapped[int] = mapped_column(default=100)
    placed_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    not_before: Mapped[Optional[dt.datetime]]
    left_at: Mapped[Optional[dt.datetime]]
    #: answered, abandoned, callback, ... and the position the caller had when they left.
    left_reason: Mapped[Optional[str]] = mapped_column(String(32))
    position_at_exit: Mapped[Optional[int]]
    handler_id: Mapped[Optional[int]] = mapped_column(ForeignKey("handlers.id", ondelete="SET NULL"))
    offered_at: Mapped[Optional[dt.datetime]]
    #: Handlers who declined this call; routing does not offer it to them again.
    declined_by: Mapped[list[Any]] = mapped_column(default=list)
    #: Times the service has rung a callback without reaching the caller.
    attempts: Mapped[int] = mapped_column(default=0)
    #: The Twilio side of the connection once accepted: conference, handler's leg, rung-back caller's leg.
    conference_sid: Mapped[Optional[str]] = mapped_column(String(64))
    handler_leg_sid: Mapped[Optional[str]] = mapped_column(String(64))
    caller_leg_sid: Mapped[Optional[str]] = mapped_column(String(64))

    call: Mapped[Call] = relationship(back_populates="queue_entry")

    @validates("flags")
    def _flags_set(self, _key: str, flags: list[Any]) -> list[Any]:
        """Keep `language` the one the new flags ask for."""
        self.language = language_asked(flags)
        return flags


class WebhookReply(Base):
    """The TwiML already returned for a webhook, so that Twilio's retry of it is answered the same way
    and repeats no side effect. Written in the same transaction as the webhook's own changes."""

    __tablename__ = "webhook_replies"
    __table_args__ = {"info": {"pipelined": "append"}}

    id: Mapped[int] = mapped_column(primary_key=True)
    call_sid: Mapped[str] = mapped_column(String(64), index=True)
    request_key: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[int] = mapped_column(default=200)
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
