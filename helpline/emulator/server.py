"""Running the emulator: a threaded WSGI server, in the foreground or on a background thread."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import BaseWSGIServer, make_server

from .app import create_app
from .config import EmulatorConfig
from .engine import Emulator
from .tls import ensure_certificate


@dataclass
class EmulatorServer:
    """A running emulator: its base `url`, the `emulator` engine and the HTTP server."""

    url: str
    emulator: Emulator
    server: BaseWSGIServer
    thread: threading.Thread | None = None

    def shutdown(self) -> None:
        """Stop serving, hang up every call and join the server thread."""
        self.server.shutdown()
        self.server.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)
        self.emulator.close()

    def __enter__(self) -> "EmulatorServer":
        """Use as a context manager."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Shut down on leaving the block."""
        self.shutdown()


def default_tls_dir() -> Path:
    """Where the emulator keeps its certificate: the service's instance folder."""
    return Path(os.environ.get("HELPLINE_INSTANCE_PATH") or Path.cwd() / "instance")


def build_server(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 5050, signal_port: int | None = None,
                 tls_dir: str | os.PathLike[str] | None = None, smtp_port: int | None = None) -> EmulatorServer:
    """Create (but do not start) a threaded server; port 0 picks a free port.

    With `signal_port` (0 = any free port) the Voice SDK's signalling is served over TLS there too,
    with a certificate made in `tls_dir` on first use.
    """
    emulator = Emulator(config)
    app = create_app(emulator=emulator)
    # One thread per request: long-polls and slow webhooks must never block other requests.
    server = make_server(host, port, app, threaded=True)
    server.daemon_threads = True
    url = f"http://{host}:{server.server_port}"
    if signal_port is not None:
        cert, key = ensure_certificate(tls_dir or default_tls_dir())
        try:
            emulator.start_signalling(host, signal_port, str(cert), str(key))
        except Exception:
            server.server_close()
            emulator.close()
            raise
    if smtp_port is not None:
        try:
            emulator.start_mail_catcher(host, smtp_port)
        except Exception:
            server.server_close()
            emulator.close()
            raise
    return EmulatorServer(url=url, emulator=emulator, server=server)


def serve(config: EmulatorConfig, host: str = "127.0.0.1", port: int = 5050, quiet: bool = True) -> None:
    """Serve in the foreground until interrupted."""
    if quiet:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    run_until_interrupted(build_server(config, host, port))


def run_until_interrupted(running: EmulatorServer) -> None:
    """Serve a built emulator in the foreground; on Ctrl-C (or any exit) close its socket and calls."""
    try:
        running.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        running.server.server_close()
        running.emulator.close()


def start_emulator_in_thread(config: EmulatorConfig | None = None, host: str = "127.0.0.1",
                             port: int = 0) -> EmulatorServer:
    """Start an emulator on a background thread (for quick experiments; tests use a real process)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    running = build_server(config or EmulatorConfig(), host, port)
    running.thread = threading.Thread(target=running.server.serve_forever, name="emulator-http", daemon=True)
    running.thread.start()
    return running
