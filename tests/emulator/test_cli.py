"""`python -m helpline.emulator` and `simulate-call`, run as real processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from twilio.twiml.voice_response import Gather, VoiceResponse


def run_module(*args: str, timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `python -m helpline.emulator ARGS` and capture its output."""
    return subprocess.run([sys.executable, "-m", "helpline.emulator", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


def gather_doc(prompt: str, action: str) -> VoiceResponse:
    """One menu: a Gather for a single key, then a fall-through line."""
    response = VoiceResponse()
    gather = Gather(num_digits=1, action=action, timeout=5)
    gather.say(prompt)
    response.append(gather)
    response.say("We did not hear a key.")
    response.redirect("step3")
    return response


def test_simulate_call_presses_keys_and_prints_the_transcript(standin, emulator_url):
    standin.route("default/voice", lambda hit: gather_doc("Press 1 for your own health.", "step2"))
    standin.route("default/step2", lambda hit: gather_doc("Press 1 if you are registered.", "step2b"))
    standin.route("default/step3", lambda hit: gather_doc("Press 2 for addiction support.", "end"))

    def end(hit):
        response = VoiceResponse()
        response.say(f"You chose {hit.values['Digits']}. Goodbye.")
        response.hangup()
        return response

    standin.route("default/end", end)
    result = run_module("simulate-call", "--emulator", emulator_url, "--keys", "1,-,2", "--from", "anonymous")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert 'IVR says: "Press 1 for your own health."' in out
    assert "keys received: 1" in out
    assert "no keys pressed" in out
    assert 'IVR says: "You chose 2. Goodbye."' in out
    assert "Outcome: completed" in out and "ended by hangup-verb" in out
    assert "Calling from anonymous" in out
    assert standin.hits_for("default/end")[-1].values["From"] == "anonymous"


def test_simulate_call_hangs_up_after(standin, emulator_url):
    standin.route("default/voice", lambda hit: '<Response><Say>Please hold</Say><Pause length="600"/></Response>')
    result = run_module("simulate-call", "--emulator", emulator_url, "--hangup-after", "0.5")
    assert result.returncode == 0, result.stderr
    assert "hanging up after 0.5 s" in result.stdout
    assert "ended by caller-hung-up" in result.stdout


def test_simulate_call_reports_an_unreachable_emulator():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = run_module("simulate-call", "--emulator", f"http://127.0.0.1:{port}", "--keys", "1")
    assert result.returncode == 2
    assert "not reachable" in result.stderr


def test_simulate_call_finds_the_emulator_on_helpline_emulator_port(standin, emulator_url):
    """scripts/run starts the emulator on $HELPLINE_EMULATOR_PORT; simulate-call looks there too."""
    standin.route("default/voice", lambda hit: '<Response><Say>Hello</Say><Hangup/></Response>')
    port = emulator_url.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if k != "HELPLINE_EMULATOR_URL"}
    result = run_module("simulate-call", env={**env, "HELPLINE_EMULATOR_PORT": port})
    assert result.returncode == 0, result.stderr
    assert "Hello" in result.stdout and "Outcome: completed" in result.stdout


def test_module_help_lists_the_options():
    result = run_module("--help")
    assert result.returncode == 0
    for option in ("--voice-url", "--status-callback", "--phone-number", "--account-sid", "--auth-token",
                   "--time-scale", "--webhook-timeout", "--signal-port", "--tls-dir"):
        assert option in result.stdout
    assert "--keys" in run_module("simulate-call", "--help").stdout


def test_simulate_call_keys_can_type_ahead_or_speak():
    import click
    import pytest

    from helpline.emulator.cli import parse_keys

    assert parse_keys("barge:111,say:my own health,-,2") == ["barge:111", "say:my own health", "", "2"]
    with pytest.raises(click.BadParameter, match="say:<words>"):
        parse_keys("barge:1a")
