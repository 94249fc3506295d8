"""The processes a benchmark (or a multi-process test) runs: the database, `helpline serve` x N, the
Twilio emulator and, with several serving processes, one `helpline scheduler`.

Every process is a real child process on a free port, started with a clean environment naming only
this run's settings, so that nothing from the shell running the benchmark leaks in. Each serving
process is its own process group: stopping (or SIGKILLing) it stops gunicorn's worker with it.

How callers and consoles reach several processes without a proxy: every serving process has its own
address, and the callers' calls are spread over them (each call's Voice URL and status callback
name one process, as a proxy spreads requests over them); each handler's console logs in to one
process and keeps its Socket.IO connection there, as a sticky proxy would keep it. The emulator's
configured status callback names the first process, for calls placed without one of their own: any
process can apply any call's status, because the state lives in the shared database.

With `proxy` (the benchmark's `--fault kill`), Twilio's webhooks and the consoles' API requests go
through a failover proxy instead (failover.py), which every process takes as its public URL, as
processes behind nginx do; the consoles' Socket.IO connections still go to one process each.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import requests
import yaml

from ..config import PROJECT_ROOT

#: Every day, all day: a benchmark must not depend on the time of day it runs.
ALWAYS_OPEN = {day: ["00:00-24:00"] for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
#: The status callback events the emulator sends (the service must handle all of them).
STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
#: Threads each serving process keeps for webhooks and API requests, beside those its WebSockets hold.
SPARE_THREADS = 64
#: Where the service's own processes print; kept for a post-mortem when something fails.
LOG_DIR_NAME = "logs"


def free_port() -> int:
    """A TCP port nobody is listening on now, nor on the port after it: the emulator listens on both
    (its Voice SDK signalling takes the next one), and another run may be choosing ports beside us."""
    for _attempt in range(50):
        with socket.socket() as probe, socket.socket() as neighbour:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
            try:
                neighbour.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two free ports side by side")


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """The current environment without any helpline or Twilio setting, plus `extra`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("HELPLINE_", "TWILIO_"))}
    # Its users log in with a username and password alone, as acceptance tests do (the second factor
    # is required by default, and tested on its own).
    env["HELPLINE_REQUIRE_MFA"] = "false"
    env.update(extra)
    return env


def memory_of(pid: int) -> dict[str, int]:
    """Peak and current resident memory of a process in kB (VmHWM, VmRSS), and the CPU time it has
    used in milliseconds (cpu_ms); empty if it is gone."""
    figures: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    name, value = line.split(":", 1)
                    figures[name] = int(value.split()[0])
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            # Fields 14 and 15 (user and system time, in clock ticks) follow the parenthesised name.
            fields = stat.read().rsplit(")", 1)[1].split()
        figures["cpu_ms"] = (int(fields[11]) + int(fields[12])) * 1000 // os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        pass
    return figures


def children_of(pid: int) -> list[int]:
    """The direct children of a process (gunicorn's worker under its master)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="ascii") as listing:
                found += [int(child) for child in listing.read().split()]
    except OSError:
        pass
    return found


class Child:
    """One child process, its log file, and the URL it serves (if any)."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], log_path: Path, url: str | None = None):
        self.name = name
        self.args = args
        self.env = dict(env)
        self.url = url
        self.log_path = log_path
        self._log = log_path.open("ab")
        # A session (and process group) of its own, so that a signal reaches gunicorn's worker too.
        self.popen = subprocess.Popen(args, env=clean_environment(env), cwd=PROJECT_ROOT, stdout=self._log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        """The process id of the command itself (gunicorn's master for `helpline serve`)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.popen.poll() is None

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        """Wait until the process answers HTTP at `path` (any status)."""
        assert self.url is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited early:\n{self.output()[-4000:]}")
            try:
                requests.get(self.url + path, timeout=2).close()
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer within {timeout:g}s:\n{self.output()[-4000:]}")

    def memory(self) -> dict[str, dict[str, int]]:
        """VmHWM/VmRSS of the process and of each child (gunicorn's worker), keyed by role."""
        figures = {"main": memory_of(self.pid)}
        for index, child in enumerate(children_of(self.pid)):
            figures[f"worker{index or ''}"] = memory_of(child)
        return {role: values for role, values in figures.items() if values}

    def output(self) -> str:
        """What the process has printed so far."""
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)

    def kill(self) -> None:
        """SIGKILL the process and every process it started, with no chance to clean up (a crash)."""
        self._signal(signal.SIGKILL)
        self.popen.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        """Stop politely (SIGTERM), then firmly."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=8)
            except subprocess.TimeoutExpired:
                pass
        self._signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)
        if not self._log.closed:
            self._log.close()


@dataclass
class StackOptions:
    """What to run."""

    workdir: Path
    database: str = "sqlite"
    #: A PostgreSQL server URL (any database on it); a fresh database is created there for the run.
    postgres_url: str | None = None
    redis_url: str | None = None
    processes: int = 1
    #: The emulator's time scale: 0.4 plays a 10-second prompt in four seconds.
    time_scale: float = 0.4
    #: Extra configuration merged over config.yaml for every process.
    settings: dict[str, Any] = field(default_factory=dict)
    #: Keep the fresh PostgreSQL database after the run (for a post-mortem).
    keep_database: bool = False
    #: Consoles each serving process will hold: each open WebSocket keeps one of gunicorn's threads.
    consoles_per_process: int = 0
    #: Put a failover proxy in front of the serving processes for webhooks and API requests.
    proxy: bool = False


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        merged[key] = _deep_merge(merged[key], value) if isinstance(value, Mapping) and isinstance(merged.get(key), dict) else value
    return merged


class Stack:
    """A running helpline: database, serving processes, emulator and scheduler; `close()` undoes it all."""

    def __init__(self, options: StackOptions):
        if options.database not in ("sqlite", "postgresql"):
            raise ValueError("database must be sqlite or postgresql")
        if options.database == "sqlite" and options.processes != 1:
            raise ValueError("several processes need PostgreSQL: SQLite is the single-process embedded database")
        if options.processes > 1 and not options.redis_url:
            raise ValueError("several processes need Redis to carry Socket.IO events between them")
        if options.database == "postgresql" and not options.postgres_url:
            raise ValueError("give the PostgreSQL server's URL")
        self.options = options
        self.workdir = options.workdir
        self.logs = self.workdir / LOG_DIR_NAME
        self.logs.mkdir(parents=True, exist_ok=True)
        self.database_url = ""
        self._dropper: Any = None
        self.ports = [free_port() for _ in range(options.processes)]
        self.emulator_url = f"http://127.0.0.1:{free_port()}"
        self.proxy_url = f"http://127.0.0.1:{free_port()}" if options.proxy else None
        self.services: list[Child | None] = [None] * options.processes
        self.emulator: Child | None = None
        self.proxy: Child | None = None
        self.scheduler: Child | None = None
        self.scheduler_note = ""
        self.base_env: dict[str, str] = {}
        self._emulator_client: Any = None

    # -- set-up ---------------------------------------------------------------------------------

    def _create_database(self) -> str:
        if self.options.database == "sqlite":
            return f"sqlite:///{self.workdir / 'helpline.db'}"
        from .decision import scratch_postgres

        url, self._dropper = scratch_postgres(self.options.postgres_url, "helpline_bench")
        return url

    def _environment(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        site = _deep_merge({
            "opening_hours": {"weekly": ALWAYS_OPEN, "closed_dates": []},
            # With several processes the scheduler runs once, in `helpline scheduler`, not in each.
            "scheduler": {"embedded": self.options.processes == 1},
            # Under gunicorn's threaded worker every open WebSocket holds a thread for its lifetime:
            # size the pool for the consoles plus the webhooks and API requests in flight.
            "server": {"threads": self.options.consoles_per_process + SPARE_THREADS},
        }, self.options.settings)
        config = self.workdir / "bench-config.yaml"
        config.write_text(yaml.safe_dump(site))
        env = {
            "HELPLINE_CONFIG": str(config),
            "HELPLINE_DATABASE_URL": self.database_url,
            "HELPLINE_INSTANCE_PATH": str(self.workdir / "instance"),
            # Shared by every process: a session cookie from one is good at the others.
            "HELPLINE_SECRET_KEY": secrets.token_urlsafe(32),
            "HELPLINE_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "HELPLINE_PUBLIC_URL": self.webhook_url(0),
            "TWILIO_ACCOUNT_SID": "AC" + secrets.token_hex(16),
            "TWILIO_AUTH_TOKEN": secrets.token_hex(16),
            "TWILIO_API_BASE_URL": self.emulator_url,
            "TWILIO_PHONE_NUMBER": "+443300000000",
        }
        if self.options.redis_url:
            env["HELPLINE_REDIS_URL"] = self.options.redis_url
        return env

    def cli(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `helpline ARGS` against this stack's configuration."""
        return subprocess.run([sys.executable, "-m", "helpline", *args], input=stdin, capture_output=True, text=True,
                              env=clean_environment(self.base_env), cwd=PROJECT_ROOT, timeout=timeout)

    def start(self) -> "Stack":
        """Create and migrate the database, then start the emulator, the services and the scheduler."""
        try:
            self.database_url = self._create_database()
            self.base_env = self._environment()
            upgraded = self.cli("db", "upgrade")
            if upgraded.returncode != 0:
                raise RuntimeError(f"helpline db upgrade failed:\n{upgraded.stderr}")
            self._start_emulator()
            for index in range(self.options.processes):
                self.start_service(index)
            if self.proxy_url is not None:
                self._start_proxy()
            if self.options.processes > 1:
                self._start_scheduler()
        except BaseException:
            self.close()
            raise
        return self

    def _start_emulator(self) -> None:
        env = self.base_env
        port = self.emulator_url.rsplit(":", 1)[1]
        events: list[str] = []
        for event in STATUS_EVENTS:
            events += ["--status-callback-event", event]
        self.emulator = Child(
            "emulator",
            [sys.executable, "-m", "helpline.emulator", "--port", port, "--signal-port", "-1",
             "--time-scale", str(self.options.time_scale),
             "--voice-url", f"{self.webhook_url(0)}/voice/incoming", "--status-callback", f"{self.webhook_url(0)}/voice/status",
             "--phone-number", env["TWILIO_PHONE_NUMBER"], "--account-sid", env["TWILIO_ACCOUNT_SID"],
             "--auth-token", env["TWILIO_AUTH_TOKEN"], *events],
            env, self.logs / "emulator.log", self.emulator_url)
        self.emulator.wait_ready("/emulator/health")

    def service_url(self, index: int) -> str:
        """The address of serving process `index`."""
        return f"http://127.0.0.1:{self.ports[index]}"

    def webhook_url(self, index: int) -> str:
        """Where Twilio's webhooks for serving process `index` go: the process itself, or the proxy."""
        return self.proxy_url or self.service_url(index)

    def service_env(self, index: int) -> dict[str, str]:
        """Serving process `index`'s environment: the public URL its webhooks are signed for is its own
        address, or the proxy's."""
        return {**self.base_env, "HELPLINE_PUBLIC_URL": self.webhook_url(index)}

    def _start_proxy(self) -> None:
        assert self.proxy_url is not None
        port = self.proxy_url.rsplit(":", 1)[1]
        self.proxy = Child("proxy", [sys.executable, "-m", "helpline.bench.failover", "--port", port,
                                     *(self.service_url(index) for index in range(self.options.processes))],
                           self.base_env, self.logs / "proxy.log", self.proxy_url)
        self.proxy.wait_ready("/healthz")

    def start_service(self, index: int) -> Child:
        """Start (or restart) serving process `index` on its port, and wait until it answers."""
        port = self.ports[index]
        child = Child(f"serve-{index}", [sys.executable, "-m", "helpline", "serve", "--port", str(port)],
                      self.service_env(index), self.logs / f"serve-{index}.log", self.service_url(index))
        self.services[index] = child
        child.wait_ready("/healthz")
        return child

    def _start_scheduler(self) -> None:
        child = Child("scheduler", [sys.executable, "-m", "helpline", "scheduler"], self.base_env, self.logs / "scheduler.log")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and child.alive() and "running" not in child.output():
            time.sleep(0.2)
        if child.alive():
            self.scheduler = child
            self.scheduler_note = "one `helpline scheduler` beside the serving processes (scheduler.embedded: false)"
        else:
            self.scheduler_note = "`helpline scheduler` did not start: " + (child.output().strip().splitlines() or ["?"])[-1]
            child.stop()

    # -- during the run ---------------------------------------------------------------------------

    def service(self, index: int) -> Child:
        """Serving process `index` (raises if it is not running)."""
        child = self.services[index]
        if child is None:
            raise RuntimeError(f"serving process {index} is not running")
        return child

    def memory(self) -> dict[str, dict[str, dict[str, int]]]:
        """Peak and current memory of every process of the stack, by process name and role."""
        figures = {child.name: child.memory() for child in [*self.services, self.emulator, self.scheduler] if child is not None}
        figures["bench"] = {"main": memory_of(os.getpid())}
        return figures

    def emulator_client(self) -> Any:
        """A client of this stack's emulator (one per stack, closed with it)."""
        from ..emulator.client import EmulatorClient

        if self._emulator_client is None:
            self._emulator_client = EmulatorClient(self.emulator_url, timeout=30)
        return self._emulator_client

    def sql_engine(self) -> Any:
        """A SQLAlchemy engine on the stack's database for reading it (the caller disposes of it).

        A plain engine: the service's own (db.make_engine) starts every SQLite transaction as a write,
        which would make the benchmark's reads queue behind the service's writes.
        """
        from sqlalchemy import create_engine

        return create_engine(self.database_url)

    # -- tear-down --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process and drop a PostgreSQL database made for the run."""
        if self._emulator_client is not None:
            self._emulator_client.close()
            self._emulator_client = None
        for child in [self.proxy, *self.services, self.scheduler, self.emulator]:
            if child is not None:
                child.stop()
        if self._dropper is not None and not self.options.keep_database:
            with contextlib.suppress(Exception):
                self._dropper()
            self._dropper = None

    def __enter__(self) -> "Stack":
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@contextlib.contextmanager
def running(options: StackOptions) -> Iterator[Stack]:
    """A started stack, closed on leaving the block."""
    with Stack(options) as stack:
        yield stack
