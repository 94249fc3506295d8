"""A job for the scheduler tests: each run writes a row saying which run it was and which process ran it."""

from __future__ import annotations

import os
import time

from sqlalchemy import text

from helpline.db import db

TABLE = "probe_runs"
CREATE = f"CREATE TABLE {TABLE} (n INTEGER NOT NULL, pid INTEGER NOT NULL)"


def record(n: int) -> None:
    """Write (n, this process id); a short pause widens the window a second run would need."""
    time.sleep(0.05)
    with db.transaction() as session:
        session.execute(text(f"INSERT INTO {TABLE} (n, pid) VALUES (:n, :pid)"), {"n": n, "pid": os.getpid()})
