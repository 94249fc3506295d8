"""`helpline serve`: the app under gunicorn's threaded worker, which Flask-SocketIO supports for
WebSocket through simple-websocket. One worker per process; run more processes behind a proxy with
sticky sessions to scale out (see README)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from typing import Any, Callable

from flask import Flask
from gunicorn.app.base import BaseApplication


log = logging.getLogger(__name__)

#: mallopt's parameter for the most arenas glibc may create (malloc.h).
M_ARENA_MAX = -8


def limit_malloc_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at `count` for this process and the worker it forks; False if not glibc.

    glibc gives threads that allocate at once arenas of their own, up to eight per core, and memory
    freed in one arena is not reused by another: with a thread per console connection the worker's
    resident set grew to 280 MB under the benchmark, against 170-185 MB with two arenas. (The same
    as MALLOC_ARENA_MAX=2 in the environment, which must be set before the process starts.)
    """
    if count <= 0:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl, macOS): nothing to tune
    return bool(mallopt(M_ARENA_MAX, count))


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, app: Flask, options: dict[str, Any]):
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def serve(app: Flask, host: str, port: int, threads: int, in_worker: Callable[[], None] | None = None,
          malloc_arenas: int = 0) -> None:
    """Serve `app` until stopped; `in_worker` runs in the worker process once it has started.

    Gunicorn forks its worker from the process that built the app, and threads do not survive a
    fork: background work (sweeps, pushes, the scheduler) must start in the worker, where the
    browsers' Socket.IO connections are, or its emits would reach nobody.
    """
    limit_malloc_arenas(malloc_arenas)
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": "gthread",
        "threads": threads,
        # Long-polling and WebSocket connections stay open; the worker must not be killed for it.
        "timeout": 0,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    if in_worker is not None:
        options["post_worker_init"] = lambda _worker: in_worker()
    _Gunicorn(app, options).run()
