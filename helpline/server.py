"""`helpline serve`: the app under gunicorn, one worker per process - gevent on PostgreSQL, threads on
SQLite (`worker_class`), both of which Flask-SocketIO supports for WebSocket through
simple-websocket. Run more processes behind a proxy with sticky sessions to scale out (see README)."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import sys
from typing import TYPE_CHECKING, Any, Callable

from gunicorn.app.base import BaseApplication

if TYPE_CHECKING:
    from flask import Flask


log = logging.getLogger(__name__)

#: mallopt's parameters (malloc.h): the most arenas glibc may create, and the size from which an
#: allocation gets pages of its own (mmap) instead of a piece of an arena.
M_ARENA_MAX = -8
M_MMAP_THRESHOLD = -3


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's mallopt, or None if the C library is not glibc (musl, macOS): nothing to tune."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name or "libc.so.6").mallopt  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


def limit_malloc_arenas(count: int) -> bool:
    """Cap glibc's malloc arenas at `count` for this process and the worker it forks; False if not glibc.

    glibc gives threads that allocate at once arenas of their own, up to eight per core, and memory
    freed in one arena is not reused by another: with a thread per console connection the worker's
    resident set grew to 280 MB under the benchmark, against 170-185 MB with two arenas. (The same
    as MALLOC_ARENA_MAX=2 in the environment, which must be set before the process starts.)
    """
    if count <= 0:
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_ARENA_MAX, count))


def pin_mmap_threshold(kib: int) -> bool:
    """Give every allocation of `kib` KiB or more pages of its own, for this process and the worker
    it forks, and keep it so; False if not glibc.

    glibc starts at 128 KiB but raises the threshold to the size of each such block freed (up to
    32 MiB), and its trim threshold to twice that. A log-in's argon2 check takes 19 MiB (users.py):
    after the first, every later one was carved from an arena, and what was freed stayed with the
    process. With 50 consoles logged in the benchmark's worker held 220-240 MB, though its Python
    objects grew by under 5 MB after start-up and malloc had about 35 MB in use. Pinned at 1 MiB,
    each check's pages go back to the system when it is done: 128-135 MB, with webhook latencies
    no worse. (The same as MALLOC_MMAP_THRESHOLD_ in the environment, which must be set before the
    process starts.)
    """
    if kib <= 0:
        return False
    mallopt = _mallopt()
    return mallopt is not None and bool(mallopt(M_MMAP_THRESHOLD, kib * 1024))


def freeze_heap() -> int:
    """Move everything alive now (the app, its libraries, their caches) out of the collector's sight.

    The worker's full (generation 2) collections walked every object the app made at start-up, and
    under the benchmark each took about 100 ms - during which a gevent worker serves nobody, so they
    were much of the webhooks' p99. Frozen, the start-up heap is never scanned (or freed) again,
    and a full collection takes 10-15 ms. Called once the worker has built the app and started its
    background work. Returns how many objects were frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


#: Optional packages that libraries import if present and the service never uses.
UNUSED_IMPORTS = (
    # engineio imports aiohttp for its asyncio client (twilio has one too); the worker serves WSGI
    # and calls Twilio through requests. Absent, it saves the worker 14 MB.
    "aiohttp",
)


#: Imported by python-socketio for its Redis message queue, which the service uses only when
#: `redis_url` is set (realtime.py). Without it the worker is 6.7 MB smaller.
REDIS_IMPORTS = ("redis",)


def skip_unused_imports(names: tuple[str, ...] = UNUSED_IMPORTS) -> None:
    """Make `import` of each of `names` fail as if not installed (the libraries fall back cleanly)."""
    for name in names:
        sys.modules.setdefault(name, None)  # type: ignore[assignment]


#: Seconds an idle keep-alive connection stays open. Longer than the proxy keeps idle upstream
#: connections (`keepalive_timeout 60s` in deploy/nginx/helpline.conf), so that the proxy always
#: closes one first: were gunicorn to close it first, nginx could send a webhook down a connection
#: in the act of closing, and a POST that fails so is not retried - Twilio would get a 502. It also
#: lets a caller's webhooks, seconds apart, reuse one connection.
KEEPALIVE_S = 75

#: The gunicorn worker class for each database; see `worker_class`.
WORKER_CLASSES = {"postgresql": "gevent", "sqlite": "gthread"}


def worker_class(database_url: str) -> str:
    """gevent on PostgreSQL, gthread on SQLite; both are worker classes Flask-SocketIO supports.

    With gevent a console's WebSocket is a few greenlets, not three threads of a quarter to half a
    megabyte each, and requests take turns at their I/O instead of fighting for the GIL: under the
    benchmark's load a gthread worker's webhook p99 was eight times its CPU time. psycopg and redis
    wait cooperatively once gevent has patched the standard library. SQLite does not: its busy
    handler sleeps in C, so one greenlet waiting for another's write lock would stall the worker,
    the holder included - the embedded SQLite default keeps threads.
    """
    return WORKER_CLASSES["postgresql" if database_url.startswith("postgresql") else "sqlite"]


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, build: Callable[[], Flask], options: dict[str, Any]):
        self.build = build
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        # Called in the worker, after gevent (if used) has patched the standard library: an app
        # built before the patch would hold locks and sockets that block the whole worker.
        skip_unused_imports()
        return self.build()


def serve(build: Callable[[], Flask], host: str, port: int, worker: str, threads: int,
          in_worker: Callable[[Flask], None] | None = None, malloc_arenas: int = 0,
          mmap_threshold_kib: int = 0) -> None:
    """Serve the app `build` returns until stopped; `in_worker` runs in the worker once it has the app.

    Gunicorn forks its worker from this process, which only supervises: the app is built in the
    worker (so the supervisor stays small, and a gevent worker patches before anything is made),
    and background work (sweeps, pushes, the scheduler) starts there too, where the browsers'
    Socket.IO connections are, or its emits would reach nobody. Then the start-up heap is frozen
    (freeze_heap).
    """
    limit_malloc_arenas(malloc_arenas)
    pin_mmap_threshold(mmap_threshold_kib)
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": 1,
        "worker_class": worker,
        # Long-polling and WebSocket connections stay open; the worker must not be killed for it.
        "timeout": 0,
        "graceful_timeout": 10,
        "keepalive": KEEPALIVE_S,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "warning",
    }
    if worker == "gthread":
        options["threads"] = threads

    def post_worker_init(gunicorn_worker: Any) -> None:
        if in_worker is not None:
            in_worker(gunicorn_worker.wsgi)
        freeze_heap()

    options["post_worker_init"] = post_worker_init
    _Gunicorn(build, options).run()
