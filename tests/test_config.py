"""Configuration: defaults, a merged file, the environment, and one clear line per mistake."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from helpline.config import ConfigError, load_settings


def test_defaults_load(tmp_path):
    settings = load_settings(environ={})
    assert settings.opening_hours.timezone == "Europe/London"
    assert settings.twilio.api_base_url == "https://api.twilio.com"
    assert settings.resolved_database_url.startswith("sqlite:///") and settings.resolved_database_url.endswith("instance/helpline.db")


def test_a_config_file_is_merged_key_by_key_and_the_environment_wins(tmp_path):
    extra = tmp_path / "site.yaml"
    extra.write_text("queue:\n  offer_callback_after_s: 30\npublic_url: https://from-file.example\n")
    settings = load_settings(environ={"HELPLINE_CONFIG": str(extra), "HELPLINE_PUBLIC_URL": "https://from-env.example/",
                                      "TWILIO_API_BASE_URL": "http://127.0.0.1:5050", "HELPLINE_DATABASE_URL": "postgresql://x/y"})
    assert settings.queue.offer_callback_after_s == 30
    assert settings.queue.announce_every_s == 45  # untouched keys keep their defaults
    assert settings.public_url == "https://from-env.example"
    assert settings.twilio.api_base_url == "http://127.0.0.1:5050"
    assert settings.database_url == "postgresql://x/y"


@pytest.mark.parametrize("text,expected", [
    ("queue:\n  offer_callback_after_s: soon\n", "config: queue.offer_callback_after_s: Input should be a valid integer"),
    ("queue:\n  annouce_every_s: 30\n", "config: queue.annouce_every_s: unknown key"),
    ("opening_hours:\n  timezone: Europe/Londn\n", "config: opening_hours.timezone: unknown time zone 'Europe/Londn'"),
    ("opening_hours:\n  weekly: {mon: ['20:00-08:00']}\n", "config: opening_hours.weekly: mon: '20:00-08:00' ends before it starts"),
    ("opening_hours:\n  weekly: {mon: ['8am-8pm']}\n", "config: opening_hours.weekly: mon: '8am-8pm' is not HH:MM-HH:MM"),
    ("opening_hours:\n  weekly: {mnday: []}\n", "config: opening_hours.weekly: unknown day 'mnday'"),
    ("opening_hours:\n  weekly: {mon: ['08:00-12:00', '11:00-13:00']}\n", "config: opening_hours.weekly: mon: opening spans overlap"),
    ("opening_hours:\n  closed_dates: ['2026-13-01']\n", "config: opening_hours.closed_dates.0:"),
    ("public_url: ftp://nope\n", "config: public_url: must be an http(s) base URL"),
    ("redis_url: localhost:6379\n", "config: redis_url: must start with redis://"),
    ("queue: [1, 2]\n", "config: queue:"),
    ("queue: {\n", "not valid YAML"),
    ("ivr:\n  relay_prefixes: ['18001x']\n", "config: ivr.relay_prefixes.0:"),
    ("ivr:\n  gather_timeout_s: 1\n", "config: ivr.gather_timeout_s:"),
    ("ivr:\n  gather_timeout_s: 10\n  relay_gather_timeout_s: 5\n",
     "relay_gather_timeout_s must be at least gather_timeout_s"),
])
def test_mistakes_are_named_by_key(tmp_path, text, expected):
    extra = tmp_path / "bad.yaml"
    extra.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"HELPLINE_CONFIG": str(extra)})
    assert any(line.startswith(expected) or expected in line for line in caught.value.problems), caught.value.problems
    assert all("\n" not in line for line in caught.value.problems)


def test_whole_day_is_allowed():
    settings = load_settings({"opening_hours": {"weekly": {"sun": ["00:00-24:00"]}}}, environ={})
    assert settings.opening_hours.weekly["sun"] == ["00:00-24:00"]


def test_a_missing_config_file_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"HELPLINE_CONFIG": str(tmp_path / "absent.yaml")})
    assert caught.value.problems[0].startswith("config: cannot read")


def test_a_bad_config_stops_the_command_with_one_line_and_no_traceback(tmp_path):
    extra = tmp_path / "bad.yaml"
    extra.write_text("routing:\n  offer_timeout_s: -1\n")
    result = subprocess.run([sys.executable, "-m", "helpline", "db", "upgrade"], capture_output=True, text=True,
                            env={"HELPLINE_CONFIG": str(extra), "PATH": "/usr/bin:/bin", "HELPLINE_INSTANCE_PATH": str(tmp_path)},
                            cwd=Path(__file__).parent.parent, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == "config: routing.offer_timeout_s: Input should be greater than or equal to 1"
