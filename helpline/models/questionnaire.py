"""Scored questionnaires (PHQ-9, GAD-7, AUDIT-C) run with a caller; see helpline/questionnaires.py."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from .core import Base, utcnow

__all__ = ["QUESTIONNAIRE_KINDS", "Questionnaire"]

QUESTIONNAIRE_KINDS = ("phq9", "gad7", "auditc")


class Questionnaire(Base):
    """One questionnaire's answers, score and band (encrypted together); in the clear only which, when,
    by whom, and whether it raised the risk screen (PHQ-9 item 9 above 0), for supervisors' alerts."""

    __tablename__ = "questionnaires"
    __table_args__ = (CheckConstraint(f"kind IN {QUESTIONNAIRE_KINDS!r}", name="kind"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    call_id: Mapped[int] = mapped_column(ForeignKey("calls.id", ondelete="CASCADE"), index=True)
    #: The first-contact record it belongs to, when there is one (a clinician's always has).
    contact_id: Mapped[Optional[int]] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    recorded_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: handler or clinician
    recorded_by_role: Mapped[str] = mapped_column(String(16))
    risk_raised: Mapped[bool] = mapped_column(default=False)
    result_enc: Mapped[str] = mapped_column(Text)
