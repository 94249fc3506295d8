"""Helpers for tests that run the service (and the emulator) as real processes over HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping

import requests

from helpline.bench.stack import free_port  # a port whose neighbour is free too (the emulator takes both)

ROOT = Path(__file__).resolve().parent.parent


def base_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """A clean environment for a child process: no stray helpline settings from the outer shell."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HELPLINE_", "TWILIO_"))}
    # Its users log in with a username and password alone, as acceptance tests do (the second factor
    # is required by default, and tested on its own).
    env["HELPLINE_REQUIRE_MFA"] = "false"
    env.update(extra)
    return env


def run_cli(args: list[str], env: Mapping[str, str], stdin: str | None = None, timeout: int = 120) -> subprocess.CompletedProcess[str]:
    """Run `helpline ARGS` in a child process."""
    return subprocess.run([sys.executable, "-m", "helpline", *args], input=stdin, capture_output=True, text=True,
                          env=base_environment(env), cwd=ROOT, timeout=timeout)


class Process:
    """A child process serving HTTP; stopped (and its output kept) when the test ends."""

    def __init__(self, args: list[str], env: Mapping[str, str], url: str, log: Path):
        self.url = url
        self.log_path = log
        self._log = log.open("wb")
        # A session of its own, so that stopping it stops gunicorn's worker too, not just its master.
        self.popen = subprocess.Popen(args, env=base_environment(env), cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                      start_new_session=True)

    def wait_ready(self, path: str = "/", timeout: float = 30) -> None:
        """Wait until the process answers HTTP at `path`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"process exited early:\n{self.output()}")
            try:
                requests.get(self.url + path, timeout=1).close()
                return
            except (requests.ConnectionError, requests.Timeout):
                # Not listening yet, or listening while its worker still builds the app.
                time.sleep(0.1)
        raise RuntimeError(f"process did not start in {timeout}s:\n{self.output()}")

    def output(self) -> str:
        """What the process has printed."""
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal_group(self, signum: int) -> None:
        """Send `signum` to the process and every child it started."""
        try:
            os.killpg(self.popen.pid, signum)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        """Stop the process and its children politely, then firmly."""
        self.signal_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.signal_group(signal.SIGKILL)
        self.popen.wait(timeout=10)
        self._log.close()


def serve(env: Mapping[str, str], tmp: Path, port: int | None = None) -> Iterator[Process]:
    """Run `helpline serve` on a free port until the generator is closed."""
    port = port or free_port()
    process = Process([sys.executable, "-m", "helpline", "serve", "--port", str(port)], env,
                      f"http://127.0.0.1:{port}", tmp / f"serve-{port}.log")
    try:
        process.wait_ready("/voice/status")
        yield process
    finally:
        process.stop()
