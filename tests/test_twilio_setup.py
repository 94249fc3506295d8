"""`helpline twilio setup` and `helpline twilio check`, run as a newcomer runs them, against the emulator.

The emulator stands in for the Twilio account (its number starts out pointing somewhere else) and
`helpline serve` for the public URL; both commands run as child processes over HTTP. Also the
`/voice/client` webhook the TwiML App points at.
"""

from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass
from typing import Iterator

import pytest
import yaml
from flask.testing import FlaskClient
from sqlalchemy import create_engine, text
from twilio.rest import Client

from helpline.emulator.client import EmulatorClient
from helpline.twilio_setup import FRIENDLY_NAME

from .conftest import ALWAYS_OPEN, Twilio
from .processes import Process, free_port, run_cli, serve

ELSEWHERE = "http://127.0.0.1:9/elsewhere/voice"
ELSEWHERE_STATUS = "http://127.0.0.1:9/elsewhere/status"
API_KEY_SID = "SK" + "a" * 32
API_KEY_SECRET = secrets.token_hex(16)


@dataclass
class World:
    """A service and an emulator standing in for a Twilio account, and the environment both read."""

    env: dict[str, str]
    emulator_url: str
    database_url: str

    def helpline(self, *args: str, **changes: str) -> tuple[int, list[str]]:
        """Run `helpline ARGS` with `changes` to the environment: its exit status and output lines.

        Every run is also checked for what must never happen: a traceback, or a secret printed.
        """
        env = {**self.env, **changes}
        done = run_cli(list(args), env)
        output = done.stdout + done.stderr
        assert "Traceback" not in output, output
        for secret in (env["TWILIO_AUTH_TOKEN"], env.get("TWILIO_API_KEY_SECRET") or "(no secret)"):
            assert secret not in output, "a secret was printed"
        return done.returncode, [line for line in output.splitlines() if line.strip()]

    def rest(self) -> Client:
        """The twilio Client on the emulator, as the account's owner."""
        client = Client(self.env["TWILIO_ACCOUNT_SID"], self.env["TWILIO_AUTH_TOKEN"])
        client.api.base_url = self.emulator_url
        return client

    def number(self):  # type: ignore[no-untyped-def]
        [number] = self.rest().incoming_phone_numbers.list(phone_number=self.env["TWILIO_PHONE_NUMBER"])
        return number


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The emulator (its number pointing elsewhere) and `helpline serve`, on free ports."""
    tmp = tmp_path_factory.mktemp("twilio-setup")
    service_port, emulator_port = free_port(), free_port()
    site = tmp / "site.yaml"
    site.write_text(yaml.safe_dump({"opening_hours": {"weekly": ALWAYS_OPEN, "closed_dates": []}}))
    database_url = f"sqlite:///{tmp / 'helpline.db'}"
    env = {
        "HELPLINE_CONFIG": str(site),
        "HELPLINE_DATABASE_URL": database_url,
        "HELPLINE_INSTANCE_PATH": str(tmp / "instance"),
        "HELPLINE_PUBLIC_URL": f"http://127.0.0.1:{service_port}",
        "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
        "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
        "TWILIO_API_BASE_URL": f"http://127.0.0.1:{emulator_port}",
        "TWILIO_PHONE_NUMBER": "+443300000077",
    }
    upgraded = run_cli(["db", "upgrade"], env)
    assert upgraded.returncode == 0, upgraded.stderr
    emulator = Process(
        [sys.executable, "-m", "helpline.emulator", "--port", str(emulator_port), "--time-scale", "0.01",
         "--voice-url", ELSEWHERE, "--status-callback", ELSEWHERE_STATUS, "--phone-number", env["TWILIO_PHONE_NUMBER"],
         "--account-sid", env["TWILIO_ACCOUNT_SID"], "--auth-token", env["TWILIO_AUTH_TOKEN"]],
        env, env["TWILIO_API_BASE_URL"], tmp / "emulator.log")
    try:
        emulator.wait_ready("/emulator/health")
        for _service in serve(env, tmp, service_port):
            yield World(env, env["TWILIO_API_BASE_URL"], database_url)
    finally:
        emulator.stop()
        log = emulator.log_path.read_text(errors="replace")
        assert "Traceback" not in log, log


def line_for(lines: list[str], item: str) -> str:
    """The one line of `check`'s report about `item`."""
    [found] = [line for line in lines if line.split(None, 1)[1].startswith(item)]
    return found


def app_sid_from(lines: list[str]) -> str:
    """The SID `setup` says to configure."""
    [line] = [line for line in lines if "TWILIO_TWIML_APP_SID" in line]
    return line.split("TWILIO_TWIML_APP_SID=")[1].split()[0] if "=" in line else line.rsplit(" ", 1)[1]


# -- before setup, setup twice, then check -------------------------------------------------------------

def test_check_before_setup_says_what_is_missing(world: World) -> None:
    status, lines = world.helpline("twilio", "check")
    assert status == 1
    assert line_for(lines, "credentials").startswith("ok")
    assert "TWILIO_API_KEY_SID and TWILIO_API_KEY_SECRET are not set" in line_for(lines, "API key")
    assert line_for(lines, "TwiML App").startswith("PROBLEM")
    assert f'no TwiML App "{FRIENDLY_NAME}"' in line_for(lines, "TwiML App")
    number = line_for(lines, "number")
    public = world.env["HELPLINE_PUBLIC_URL"]
    assert number.startswith("PROBLEM") and f"Voice URL is {ELSEWHERE}, not {public}/voice/incoming" in number
    assert f"status callback is {ELSEWHERE_STATUS}, not {public}/voice/status" in number
    assert line_for(lines, "public URL").startswith("ok")
    assert lines[-1] == "3 of 5 items are missing or wrong"


def test_setup_creates_the_app_and_points_the_number_and_a_second_run_changes_nothing(world: World) -> None:
    public = world.env["HELPLINE_PUBLIC_URL"]
    phone = world.env["TWILIO_PHONE_NUMBER"]
    status, lines = world.helpline("twilio", "setup")
    assert status == 0, lines
    app_sid = app_sid_from(lines)
    assert lines[0] == f'created the TwiML App "{FRIENDLY_NAME}" ({app_sid}), Voice URL POST {public}/voice/client'
    assert f"changed the number {phone}'s Voice URL from {ELSEWHERE} to {public}/voice/incoming" in lines
    assert f"changed the number {phone}'s status callback from {ELSEWHERE_STATUS} to {public}/voice/status" in lines
    assert lines[-1].startswith(f"now set TWILIO_TWIML_APP_SID={app_sid} ")

    rest = world.rest()
    [app] = rest.applications.list(friendly_name=FRIENDLY_NAME)
    assert (app.sid, app.voice_url, app.voice_method) == (app_sid, f"{public}/voice/client", "POST")
    number = world.number()
    assert (number.voice_url, number.voice_method, number.status_callback, number.status_callback_method) == (
        f"{public}/voice/incoming", "POST", f"{public}/voice/status", "POST")

    again_status, again = world.helpline("twilio", "setup", TWILIO_TWIML_APP_SID=app_sid)
    assert again_status == 0
    assert again == [f"nothing to change: the TwiML App {app_sid} and the number {phone} already point at {public}",
                     f"TWILIO_TWIML_APP_SID is already {app_sid}"]
    assert [a.sid for a in rest.applications.list(friendly_name=FRIENDLY_NAME)] == [app_sid]
    assert rest.applications(app_sid).fetch().date_updated == app.date_updated  # not even rewritten
    # Without the SID configured it finds the same app by its name.
    assert world.helpline("twilio", "setup")[1][0].startswith("nothing to change")


def test_after_setup_a_call_to_the_number_reaches_the_service(world: World) -> None:
    with EmulatorClient(world.emulator_url) as emulator:
        sid = emulator.place_call(keys=[])
        emulator.wait_for(sid, "say", text_contains="confidential")
    engine = create_engine(world.database_url)
    try:
        deadline = time.monotonic() + 10
        with engine.connect() as connection:
            while not connection.execute(text("select 1 from calls where call_sid = :sid"), {"sid": sid}).first():
                assert time.monotonic() < deadline, "the service never recorded the call"
                time.sleep(0.1)
    finally:
        engine.dispose()


def configured(world: World) -> dict[str, str]:
    """The environment a finished set-up has: the app's SID and an API key."""
    [app] = world.rest().applications.list(friendly_name=FRIENDLY_NAME)
    return {"TWILIO_TWIML_APP_SID": app.sid, "TWILIO_API_KEY_SID": API_KEY_SID, "TWILIO_API_KEY_SECRET": API_KEY_SECRET}


def test_check_passes_after_setup(world: World) -> None:
    status, lines = world.helpline("twilio", "check", **configured(world))
    assert status == 0, lines
    assert [line.split()[0] for line in lines[:-1]] == ["ok"] * 5
    assert lines[-1] == "all 5 items are ready"


def test_check_without_the_app_sid_says_which_to_set(world: World) -> None:
    env = configured(world)
    app_sid = env.pop("TWILIO_TWIML_APP_SID")
    status, lines = world.helpline("twilio", "check", **env)
    assert status == 1
    assert line_for(lines, "TwiML App") == (
        f"PROBLEM  TwiML App: {app_sid}: TWILIO_TWIML_APP_SID is not set: set it to {app_sid}")


# -- check's failures, one clear line each --------------------------------------------------------------

def test_check_with_a_wrong_auth_token(world: World) -> None:
    status, lines = world.helpline("twilio", "check", TWILIO_AUTH_TOKEN=secrets.token_hex(16), **configured(world))
    assert status == 1
    assert line_for(lines, "credentials") == (
        f"PROBLEM  credentials: Twilio refused account {world.env['TWILIO_ACCOUNT_SID']} with this auth token "
        "(error 20003): check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    assert line_for(lines, "TwiML App").startswith("skipped")
    assert line_for(lines, "public URL").startswith("ok")


def test_check_and_setup_with_a_number_the_account_does_not_have(world: World) -> None:
    status, lines = world.helpline("twilio", "check", TWILIO_PHONE_NUMBER="+447700900999", **configured(world))
    assert status == 1
    assert line_for(lines, "number") == (
        f"PROBLEM  number +447700900999: not a number on account {world.env['TWILIO_ACCOUNT_SID']}")
    assert lines[-1] == "1 of 5 items is missing or wrong"

    status, lines = world.helpline("twilio", "setup", TWILIO_PHONE_NUMBER="+447700900999")
    assert status == 1
    assert lines == [f"Error: +447700900999 is not a number on Twilio account {world.env['TWILIO_ACCOUNT_SID']}: "
                     "check TWILIO_PHONE_NUMBER (E.164, e.g. +441134960000), or buy or port the number there"]


def test_check_with_the_public_url_unreachable(world: World) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    status, lines = world.helpline("twilio", "check", HELPLINE_PUBLIC_URL=nowhere, **configured(world))
    assert status == 1
    assert line_for(lines, "public URL").startswith(f"PROBLEM  public URL: GET {nowhere}/healthz did not answer")
    # What Twilio was set up with no longer matches the configured public URL either.
    assert f"not {nowhere}/voice/incoming" in line_for(lines, "number")


def test_check_with_the_number_pointing_elsewhere_then_setup_puts_it_back(world: World) -> None:
    number = world.number()
    world.rest().incoming_phone_numbers(number.sid).update(voice_url="https://elsewhere.example/voice")
    status, lines = world.helpline("twilio", "check", **configured(world))
    assert status == 1
    public = world.env["HELPLINE_PUBLIC_URL"]
    assert line_for(lines, "number") == (
        f"PROBLEM  number {world.env['TWILIO_PHONE_NUMBER']}: Voice URL is https://elsewhere.example/voice, "
        f"not {public}/voice/incoming (run `helpline twilio setup`)")

    status, lines = world.helpline("twilio", "setup", **configured(world))
    assert status == 0
    assert lines[0] == (f"changed the number {world.env['TWILIO_PHONE_NUMBER']}'s Voice URL from "
                        f"https://elsewhere.example/voice to {public}/voice/incoming")
    assert world.helpline("twilio", "check", **configured(world))[0] == 0


def test_setup_with_bad_input_says_one_line(world: World) -> None:
    status, lines = world.helpline("twilio", "setup", TWILIO_API_BASE_URL=f"http://127.0.0.1:{free_port()}")
    assert status == 1 and len(lines) == 1
    assert lines[0].startswith("Error: could not reach Twilio's API at http://127.0.0.1:")
    status, lines = world.helpline("twilio", "setup", TWILIO_AUTH_TOKEN=secrets.token_hex(16))
    assert status == 1 and len(lines) == 1 and "Twilio refused account" in lines[0]
    status, lines = world.helpline("twilio", "setup", TWILIO_TWIML_APP_SID="not-a-sid")
    assert status == 2
    assert lines == ["config: twilio.twiml_app_sid: must be a TwiML App SID (AP followed by 32 hex digits)"]


def test_help_explains_both_commands(world: World) -> None:
    status, lines = world.helpline("twilio", "--help")
    assert status == 0
    help_text = "\n".join(lines)
    assert "setup  makes the account match the configuration" in help_text
    assert "check  reports, one line per item" in help_text


# -- the TwiML App's Voice URL ----------------------------------------------------------------------------

def test_a_call_from_a_softphone_hears_that_the_console_cannot_place_calls(twilio: Twilio, client: FlaskClient) -> None:
    response = twilio.post("/voice/client", {"CallSid": "CA" + "5" * 32, "From": "client:handler-1", "To": ""})
    assert response.status_code == 200 and response.mimetype == "text/xml"
    body = response.get_data(as_text=True)
    assert "cannot place calls" in body and body.endswith("<Hangup /></Response>")

    unsigned = twilio.post("/voice/client", {"CallSid": "CA" + "5" * 32}, signed=False)
    assert unsigned.status_code == 403 and unsigned.json["error"] == "invalid_signature"
    assert client.get("/voice/client").status_code in (403, 405)
