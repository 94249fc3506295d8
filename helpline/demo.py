"""Demo data for a new, empty database: one user of each role (two handlers), with fresh passwords.

The passwords are generated on this machine and kept owner-only in the instance folder, so that
`scripts/run` can print them again; nothing secret is committed.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from pathlib import Path

from sqlalchemy import func, select

from .config import Settings
from .db import Database
from .reference_data import load_demo_services
from .users import create_user
from .models import User

DEMO_USERS = (
    ("handler", "handler", "Alex (handler)"),
    ("handler2", "handler", "Sam (handler)"),
    ("supervisor", "supervisor", "Jo (supervisor)"),
    ("clinician", "clinician", "Dr Rivers (clinician)"),
    ("admin", "admin", "Admin"),
)


def seed_demo(settings: Settings) -> list[str]:
    """Seed an empty database; either way, return lines describing the demo log-ins."""
    logins_file = Path(settings.instance_path) / "demo-logins.json"
    database = Database()
    database.configure(settings.resolved_database_url)
    try:
        with database.transaction() as session:
            if session.scalar(select(func.count(User.id))):
                if logins_file.exists():
                    logins = json.loads(logins_file.read_text())
                    return ["the database already has users; demo log-ins:"] + _describe(logins)
                return ["the database already has users; no demo data loaded"]
            logins = {}
            for username, role, name in DEMO_USERS:
                password = secrets.token_urlsafe(9)
                create_user(session, username, role, password, name)
                logins[username] = {"role": role, "password": password}
            services = load_demo_services(session, dt.date.today(), clinician_username="clinician")
        logins_file.parent.mkdir(parents=True, exist_ok=True)
        logins_file.touch(mode=0o600)
        logins_file.write_text(json.dumps(logins, indent=2))
        return [f"demo data loaded ({services}); log-ins:"] + _describe(logins)
    finally:
        database.dispose()


def _describe(logins: dict[str, dict[str, str]]) -> list[str]:
    return [f"  {name:<11} {entry['role']:<11} password: {entry['password']}" for name, entry in logins.items()]
