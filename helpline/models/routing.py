"""Live routing records: which handlers have a console open, in which process.

Routing offers calls only to handlers with at least one live console connection. Each connection is
a row, so that every process sees every other's connections; a process refreshes `seen_at` for its
own rows, and rows of a process that stopped refreshing them are pruned (see presence.py).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from .core import Base, utcnow

__all__ = ["ConsoleConnection"]


class ConsoleConnection(Base):
    """One open Socket.IO connection of a handler's console."""

    __tablename__ = "console_connections"
    __table_args__ = (Index("ix_console_connections_process_seen", "process", "seen_at"),)

    #: The Socket.IO session id (unique across processes: engine.io generates random ids).
    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    handler_id: Mapped[int] = mapped_column(ForeignKey("handlers.id", ondelete="CASCADE"), index=True)
    #: The serving process that holds the connection.
    process: Mapped[str] = mapped_column(String(64))
    connected_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
