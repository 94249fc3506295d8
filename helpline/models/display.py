"""Display-only screens: the wall screens that show the supervisors' figures and nothing else.

A display holds a random token (in its page address, after `#`, so it never reaches a server log);
only its SHA-256 is stored here, so a copy of the database opens no screen. A token does not time out,
so a wall screen can run all day, and it stops working the moment it is revoked.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from .core import Base, utcnow

__all__ = ["DisplayToken"]


class DisplayToken(Base):
    """One wall screen allowed to read the wallboard's figures."""

    __tablename__ = "display_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: What the screen is, for the operator ("Leeds office wall").
    name: Mapped[str] = mapped_column(String(64))
    #: SHA-256 (hex) of the token.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: When the screen last read the figures (written at most once a minute).
    last_seen_at: Mapped[Optional[dt.datetime]]
    revoked_at: Mapped[Optional[dt.datetime]]
