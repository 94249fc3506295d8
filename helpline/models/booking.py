"""First contact, risk screens, and booking a clinician: localities, sites, clinicians, their weekly
availability and its exceptions, and the bookings themselves.

Everything said by or about a caller lives encrypted (`*_enc` columns, see `crypto.py`); the plain
columns hold only what the service must query on: dates, states, codes and foreign keys.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import (
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from .core import Base, Call, User, utcnow

__all__ = [
    "PROFESSIONS", "MODALITIES", "EXCEPTION_KINDS", "CONTACT_DISPOSITIONS", "BOOKING_STATUSES", "ATTENDANCE",
    "RISK_LEVELS",
    "Locality", "Site", "Clinician", "AvailabilityRule", "AvailabilityException", "Contact", "RiskScreen",
    "Booking", "apscheduler_jobs",
]

PROFESSIONS = ("psychiatrist", "psychologist", "addiction_specialist", "therapist")
MODALITIES = ("face_to_face", "video")
EXCEPTION_KINDS = ("leave", "closure", "training")
CONTACT_DISPOSITIONS = ("in_progress", "third_party", "booked")
BOOKING_STATUSES = ("booked", "cancelled")
#: Whether the caller came to an appointment, as its clinician records it once it has begun.
ATTENDANCE = ("attended", "did_not_attend")
RISK_LEVELS = ("none", "low", "moderate", "immediate")


class Locality(Base):
    """An integrated care board (ICB) area of England, by its ODS code (for example QWO)."""

    __tablename__ = "localities"

    code: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    region: Mapped[str] = mapped_column(String(64))


class Site(Base):
    """Premises where clinicians see callers face to face, chosen so they need not meet colleagues."""

    __tablename__ = "sites"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    locality_code: Mapped[str] = mapped_column(ForeignKey("localities.code"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    #: The full postal address, one line per element.
    address: Mapped[list[Any]] = mapped_column(default=list)
    town: Mapped[str] = mapped_column(String(80))
    active: Mapped[bool] = mapped_column(default=True)

    locality: Mapped[Locality] = relationship()

    @property
    def short_address(self) -> str:
        """The first line and the town: enough for a discreet text message."""
        first = self.address[0] if self.address else self.name
        return f"{first}, {self.town}"


class Clinician(Base):
    """A clinician callers can be booked with; a console user of role clinician may be linked."""

    __tablename__ = "clinicians"
    __table_args__ = (CheckConstraint(f"profession IN {PROFESSIONS!r}", name="profession"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    profession: Mapped[str] = mapped_column(String(32), index=True)
    #: The locality the clinician is based in; their video slots are offered under it.
    locality_code: Mapped[str] = mapped_column(ForeignKey("localities.code"), index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), unique=True)
    active: Mapped[bool] = mapped_column(default=True)

    user: Mapped[Optional[User]] = relationship()
    rules: Mapped[list["AvailabilityRule"]] = relationship(back_populates="clinician", cascade="all, delete-orphan")


class AvailabilityRule(Base):
    """A weekly block of appointments: a weekday, local wall-clock hours, a site or video, a slot length.

    Slots are computed from these rules for the dates asked about; they are never stored, so months
    of availability cost nothing until someone books.
    """

    __tablename__ = "availability_rules"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday"),
        CheckConstraint("start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute", name="hours"),
        CheckConstraint("slot_minutes BETWEEN 10 AND 240", name="slot_minutes"),
        CheckConstraint(f"modality IN {MODALITIES!r}", name="modality"),
        CheckConstraint(
            "(modality = 'video' AND site_id IS NULL) OR (modality = 'face_to_face' AND site_id IS NOT NULL)",
            name="site_matches_modality",
        ),
        Index("ix_availability_rules_weekday_modality", "weekday", "modality"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinician_id: Mapped[int] = mapped_column(ForeignKey("clinicians.id", ondelete="CASCADE"), index=True)
    #: Monday is 0, as in Python's date.weekday().
    weekday: Mapped[int]
    start_minute: Mapped[int]
    end_minute: Mapped[int]
    slot_minutes: Mapped[int] = mapped_column(default=50)
    modality: Mapped[str] = mapped_column(String(16))
    site_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    valid_from: Mapped[Optional[dt.date]]
    valid_until: Mapped[Optional[dt.date]]

    clinician: Mapped[Clinician] = relationship(back_populates="rules")
    site: Mapped[Optional[Site]] = relationship()


class AvailabilityException(Base):
    """Whole days without appointments: a clinician's leave, or a site's closure (one of the two is set)."""

    __tablename__ = "availability_exceptions"
    __table_args__ = (
        CheckConstraint("(clinician_id IS NULL) <> (site_id IS NULL)", name="one_subject"),
        CheckConstraint("starts_on <= ends_on", name="dates"),
        CheckConstraint(f"kind IN {EXCEPTION_KINDS!r}", name="kind"),
        Index("ix_availability_exceptions_dates", "starts_on", "ends_on"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    clinician_id: Mapped[Optional[int]] = mapped_column(ForeignKey("clinicians.id", ondelete="CASCADE"), index=True)
    site_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sites.id", ondelete="CASCADE"), index=True)
    starts_on: Mapped[dt.date]
    #: Inclusive.
    ends_on: Mapped[dt.date]
    kind: Mapped[str] = mapped_column(String(16))

    clinician: Mapped[Optional[Clinician]] = relationship()
    site: Mapped[Optional[Site]] = relationship()


class Contact(Base):
    """The first-contact record a handler fills in during a call, one per call.

    `details_enc` holds every personal field as one encrypted JSON object (names, numbers, email,
    needs, localities, notes...), merged field by field as the handler types. `person_hash` is the
    call's keyed number hash, so a returning caller's earlier contacts can be found.
    """

    __tablename__ = "contacts"
    __table_args__ = (CheckConstraint(f"disposition IN {CONTACT_DISPOSITIONS!r}", name="disposition"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), unique=True)
    #: A copy of the call's keyed number hash; key rotation translates it (see keys.py).
    person_hash: Mapped[Optional[str]] = mapped_column(String(64), index=True, info={"keyed_hash": True})
    recorded_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: None until the caller says whether the call is about their own health.
    about_self: Mapped[Optional[bool]]
    disposition: Mapped[str] = mapped_column(String(16), default="in_progress")
    details_enc: Mapped[Optional[str]] = mapped_column(Text)
    #: The episode's end, as the clinician treating the caller records it (Europe/London date): the
    #: record is kept `retention.discharged_record_days` from then, and removed by the purge after.
    discharged_on: Mapped[Optional[dt.date]] = mapped_column(index=True)
    #: When, and by whom, the discharge was recorded.
    discharged_at: Mapped[Optional[dt.datetime]]
    discharged_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))

    call: Mapped[Call] = relationship()
    bookings: Mapped[list["Booking"]] = relationship(back_populates="contact", order_by="Booking.id")


class RiskScreen(Base):
    """One run of the risk screen: the level in the clear (for alerts and reports), the answers encrypted."""

    __tablename__ = "risk_screens"
    __table_args__ = (CheckConstraint(f"level IN {RISK_LEVELS!r}", name="level"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    handler_user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    level: Mapped[str] = mapped_column(String(16))
    answers_enc: Mapped[str] = mapped_column(Text)


class Booking(Base):
    """An appointment with a clinician at a site or by video.

    `held_start` equals `starts_at` while the booking holds its slot and is NULL once cancelled: the
    unique constraint on (clinician_id, held_start) is what makes two handlers booking the same slot
    at once end with exactly one booking, on SQLite and PostgreSQL alike (NULLs never collide).
    """

    __tablename__ = "bookings"
    __table_args__ = (
        UniqueConstraint("clinician_id", "held_start", name="uq_bookings_clinician_id_held_start"),
        CheckConstraint(f"status IN {BOOKING_STATUSES!r}", name="status"),
        CheckConstraint(f"modality IN {MODALITIES!r}", name="modality"),
        CheckConstraint(f"attendance IN {ATTENDANCE!r}", name="attendance"),
        CheckConstraint("starts_at < ends_at", name="times"),
        Index("ix_bookings_clinician_starts", "clinician_id", "starts_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    clinician_id: Mapped[int] = mapped_column(ForeignKey("clinicians.id"))
    site_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sites.id"))
    modality: Mapped[str] = mapped_column(String(16))
    starts_at: Mapped[dt.datetime]
    ends_at: Mapped[dt.datetime]
    held_start: Mapped[Optional[dt.datetime]]
    status: Mapped[str] = mapped_column(String(16), default="booked")
    #: Raised on every move or cancellation: the calendar entry's SEQUENCE.
    revision: Mapped[int] = mapped_column(default=0)
    booked_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    cancelled_at: Mapped[Optional[dt.datetime]]
    #: not_agreed, no_mobile, held (waiting for the caller's safe hours), sent or failed: the latest text.
    confirmation: Mapped[Optional[str]] = mapped_column(String(16))
    reminder_at: Mapped[Optional[dt.datetime]]
    #: attended or did_not_attend, recorded by the clinician once the appointment has begun; None until then.
    attendance: Mapped[Optional[str]] = mapped_column(String(16))
    attendance_at: Mapped[Optional[dt.datetime]]

    contact: Mapped[Contact] = relationship(back_populates="bookings")
    clinician: Mapped[Clinician] = relationship()
    site: Mapped[Optional[Site]] = relationship()


# APScheduler's own table (see scheduler.py), declared here too so that the migrations create it and
# the models-versus-migrations check knows it; the definition must match SQLAlchemyJobStore's.
apscheduler_jobs = Table(
    "apscheduler_jobs",
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)
