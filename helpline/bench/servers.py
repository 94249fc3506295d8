"""A PostgreSQL and a Redis of the run's own, on free ports in a scratch folder, that a fault test or
`helpline bench --fault` may stop and start again: never the machine's own servers, which other
work may be using.

PostgreSQL is made with `initdb` and run with `pg_ctl` from /usr/lib/postgresql/*/bin (or PATH); as
root they run as the `postgres` user, since PostgreSQL refuses to run as root. Redis is
`redis-server` with no persistence.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


class ServerMissing(RuntimeError):
    """The server's programs are not installed here."""


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda path: int(path.split("/")[4]))
    if found:
        return found[-1]
    on_path = shutil.which(name)
    if on_path is None:
        raise ServerMissing(f"{name} (PostgreSQL) is not installed")
    return on_path


class OwnPostgres:
    """A PostgreSQL cluster in a scratch folder of its own, trust authentication, on a free port of
    127.0.0.1. (Its own folder directly under the system's temporary directory: as root the server
    runs as `postgres`, which could not reach a folder inside root's private ones.)"""

    def __init__(self) -> None:
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix="helpline-postgres-"))
        self.data = self.folder / "pgdata"
        self.port = _free_port()
        self.user: str | None = "postgres" if os.geteuid() == 0 else None
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        command = list(args)
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    def create(self) -> "OwnPostgres":
        """initdb the cluster and start it."""
        if self.user is not None:
            record = pwd.getpwnam(self.user)
            os.chown(self.folder, record.pw_uid, record.pw_gid)
        made = self._run(_postgres_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                         "--no-sync", "-E", "UTF8")
        if made.returncode != 0:
            raise RuntimeError(f"initdb failed: {made.stderr.strip()}")
        self.start()
        return self

    def start(self) -> None:
        """Start the server (again) on its port and wait until it takes connections."""
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} -c fsync=off"
        started = self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.folder / "postgres.log"),
                            "-o", options, "-w", "start")
        if started.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {started.stderr.strip() or started.stdout.strip()}")
        self._wait(up=True)

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server (`immediate`: as a crash would, every connection cut at once)."""
        self._run(_postgres_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        self._wait(up=False)

    def running(self) -> bool:
        """Whether the server takes connections."""
        return _answers(self.port)

    def _wait(self, up: bool, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.running() != up:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} did not {'start' if up else 'stop'}")
            time.sleep(0.1)

    def destroy(self) -> None:
        """Stop the server and remove its files."""
        with contextlib.suppress(Exception):
            if self.data.exists():
                self.stop("fast")
        shutil.rmtree(self.folder, ignore_errors=True)


class OwnRedis:
    """A redis-server on a free port of 127.0.0.1, with no persistence."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "OwnRedis":
        """Start (or start again) the server on its port and wait until it answers."""
        program = shutil.which("redis-server")
        if program is None:
            raise ServerMissing("redis-server is not installed")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [program, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", str(self.folder), "--logfile", str(self.folder / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not _answers(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Kill the server, as a crash would: every client's connection is cut."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def running(self) -> bool:
        """Whether the server answers."""
        return _answers(self.port)

    def destroy(self) -> None:
        """Stop the server and remove its folder."""
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
