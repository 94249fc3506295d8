"""What the public pages keep: only marks of when a client address last sent a request (to limit
how often one address may), never who sent it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .core import Base, utcnow

__all__ = ["PublicSubmission"]


class PublicSubmission(Base):
    """One request sent from the public pages by a client address, kept briefly to rate-limit it.

    The address is stored only as a keyed hash (as for failed log-ins): the limit needs to count,
    never to know who. Rows older than the limit's window are deleted as new ones are written.
    """

    __tablename__ = "public_submissions"
    __table_args__ = (Index("ix_public_submissions_address_at", "address_hash", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address_hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
