"""The whole helpline as a newcomer runs it: `helpline serve` and the Twilio emulator, as separate
processes on free ports, talking over HTTP with signed webhooks and Twilio's REST paths."""

from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from helpline.emulator.client import EmulatorClient

from .conftest import ALWAYS_OPEN
from .processes import Process, free_port, run_cli, serve

#: Fifty to a hundred times faster than life: prompts, pauses and timeouts shrink, webhooks do not.
TIME_SCALE = 0.01


@dataclass
class Stack:
    """A running service and emulator, and ways to look inside."""

    service: Process
    emulator_process: Process
    emulator: EmulatorClient
    engine: Engine
    env: dict[str, str]

    def sql(self, query: str, **params: Any) -> list[Any]:
        """Rows from the service's database."""
        with self.engine.connect() as connection:
            return list(connection.execute(text(query), params))

    def wait_for_row(self, sid: str, check: Any, timeout: float = 15) -> Any:
        """The call's record once `check(row)` holds (status callbacks arrive a moment after the call ends)."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sql("select * from calls where call_sid = :sid", sid=sid)
            if rows and check(rows[0]):
                return rows[0]
            if time.monotonic() > deadline:
                raise AssertionError(f"call {sid} never satisfied the check; last seen: {rows[0] if rows else None}")
            time.sleep(0.05)

    def call_row(self, sid: str) -> Any:
        """The service's record of a call."""
        rows = self.sql("select * from calls where call_sid = :sid", sid=sid)
        assert rows, f"no record of {sid}"
        return rows[0]


def start_stack(tmp: Path, database_url: str, settings: dict[str, Any] | None = None,
                status_events: tuple[str, ...] = ("initiated", "ringing", "answered", "completed")) -> Iterator[Stack]:
    """Run service and emulator until the generator is closed."""
    service_port, emulator_port = free_port(), free_port()
    service_url = f"http://127.0.0.1:{service_port}"
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    site = tmp / "site.yaml"
    merged = {"opening_hours": {"weekly": ALWAYS_OPEN, "closed_dates": []}}
    for key, value in (settings or {}).items():
        merged[key] = value
    site.write_text(yaml.safe_dump(merged))
    env = {
        "HELPLINE_CONFIG": str(site),
        "HELPLINE_DATABASE_URL": database_url,
        "HELPLINE_INSTANCE_PATH": str(tmp / "instance"),
        "HELPLINE_PUBLIC_URL": service_url,
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_API_BASE_URL": emulator_url,
        "TWILIO_PHONE_NUMBER": "+443300000000",
    }
    upgraded = run_cli(["db", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stderr
    events: list[str] = []
    for event in status_events:
        events += ["--status-callback-event", event]
    emulator = Process(
        [sys.executable, "-m", "helpline.emulator", "--port", str(emulator_port), "--signal-port", str(free_port()),
         "--tls-dir", str(tmp / "instance"), "--time-scale", str(TIME_SCALE),
         "--voice-url", f"{service_url}/voice/incoming", "--status-callback", f"{service_url}/voice/status",
         "--phone-number", env["TWILIO_PHONE_NUMBER"], "--account-sid", env["TWILIO_ACCOUNT_SID"],
         "--auth-token", env["TWILIO_AUTH_TOKEN"], *events],
        env, emulator_url, tmp / "emulator.log")
    client = EmulatorClient(emulator_url)
    engine = create_engine(database_url)
    try:
        emulator.wait_ready("/emulator/health")
        for service in serve(env, tmp, service_port):
            yield Stack(service, emulator, client, engine, env)
    finally:
        client.close()
        engine.dispose()
        emulator.stop()
