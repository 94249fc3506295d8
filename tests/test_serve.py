"""The real thing: `helpline db upgrade`, `create-user` and `serve` as processes, webhooks over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import requests
import yaml
from sqlalchemy import create_engine, text
from twilio.request_validator import RequestValidator

from helpline.server import worker_class

from .conftest import ALWAYS_OPEN, new_call_sid
from .processes import free_port, run_cli, serve

TOKEN = "serve-test-token"


@pytest.fixture
def service(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    site = tmp_path / "always-open.yaml"
    site.write_text(yaml.safe_dump({"opening_hours": {"weekly": ALWAYS_OPEN, "closed_dates": []}}))
    env = {"HELPLINE_CONFIG": str(site), "HELPLINE_DATABASE_URL": database_url, "HELPLINE_INSTANCE_PATH": str(tmp_path / "instance"),
           "HELPLINE_PUBLIC_URL": f"http://127.0.0.1:{port}", "TWILIO_ACCOUNT_SID": "AC" + "2" * 32,
           "TWILIO_AUTH_TOKEN": TOKEN}
    yield from serve(env, tmp_path, port)


def post_signed(url: str, params: dict[str, str], token: str = TOKEN) -> requests.Response:
    """POST as Twilio would."""
    signature = RequestValidator(token).compute_signature(url, params)
    return requests.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=10)


def test_db_upgrade_is_idempotent_from_the_command_line(tmp_path):
    env = {"HELPLINE_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "HELPLINE_INSTANCE_PATH": str(tmp_path)}
    for _ in range(2):
        result = run_cli(["db", "upgrade"], env)
        assert result.returncode == 0, result.stderr
        assert "up to date" in result.stdout


def test_create_user_reads_the_password_from_stdin(database_url, tmp_path):
    env = {"HELPLINE_DATABASE_URL": database_url, "HELPLINE_INSTANCE_PATH": str(tmp_path)}
    result = run_cli(["create-user", "Dr.Smith", "--role", "handler", "--password-stdin"], env, stdin="correct horse battery\n")
    assert result.returncode == 0, result.stderr
    engine = create_engine(database_url)
    with engine.connect() as connection:
        row = connection.execute(text("select username, role, password_hash from users")).one()
        assert row.username == "dr.smith" and row.role == "handler"
        assert row.password_hash.startswith("$argon2id$") and "correct horse" not in row.password_hash
        assert connection.execute(text("select count(*) from handlers")).scalar() == 1
    engine.dispose()
    again = run_cli(["create-user", "dr.smith", "--role", "handler", "--password-stdin"], env, stdin="another password\n")
    assert again.returncode != 0 and "already taken" in again.stderr
    short = run_cli(["create-user", "jo", "--role", "admin", "--password-stdin"], env, stdin="short\n")
    assert short.returncode != 0 and "at least" in short.stderr
    bad_role = run_cli(["create-user", "jo", "--role", "king", "--password-stdin"], env, stdin="long enough password\n")
    assert bad_role.returncode != 0 and "Traceback" not in bad_role.stderr


def test_serve_refuses_an_unmigrated_database(tmp_path):
    env = {"HELPLINE_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}", "HELPLINE_INSTANCE_PATH": str(tmp_path)}
    result = run_cli(["serve", "--port", str(free_port())], env, timeout=60)
    assert result.returncode != 0 and "helpline db upgrade" in result.stderr


def test_a_signed_call_through_a_real_server(service, database_url):
    sid = new_call_sid()
    base = service.url
    params = {"CallSid": sid, "From": "+447911123456", "To": "+443000000000", "CallStatus": "ringing"}
    assert requests.post(base + "/voice/incoming", data=params, timeout=10).status_code == 403
    response = post_signed(base + "/voice/incoming", params)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/xml")
    document = ET.fromstring(response.content)
    while document.find("Gather") is None:
        response = post_signed(base + document.find("Redirect").text, params)
        document = ET.fromstring(response.content)
    for key in ("1", "1", "1"):
        action = document.find("Gather").get("action")
        document = ET.fromstring(post_signed(base + action, {**params, "Digits": key}).content)
        while document.find("Gather") is None and document.find("Redirect") is not None:
            document = ET.fromstring(post_signed(base + document.find("Redirect").text, params).content)
    assert document.find("Enqueue") is not None
    engine = create_engine(database_url)
    with engine.connect() as connection:
        need, status = connection.execute(text("select need, caller_number_status from calls where call_sid = :sid"), {"sid": sid}).one()
        assert (need, status) == ("mental_health", "valid")
    engine.dispose()


ARENA_PROBE = """
import ctypes, sys, threading
from helpline.server import limit_malloc_arenas
if int(sys.argv[1]):
    assert limit_malloc_arenas(int(sys.argv[1]))
barrier = threading.Barrier(8)
def work():
    barrier.wait()
    kept = [bytearray(2000) for _ in range(2000)]
    barrier.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads: thread.start()
for thread in threads: thread.join()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def _arenas(cap: int) -> int:
    done = subprocess.run([sys.executable, "-c", ARENA_PROBE, str(cap)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return sum(1 for line in done.stderr.splitlines() if line.startswith("Arena"))


def test_serve_caps_malloc_arenas_so_console_threads_do_not_bloat_the_worker():
    """Eight threads allocating at once: glibc would give them arenas of their own; capped, they share two."""
    import ctypes.util

    if not ctypes.util.find_library("c") or "glibc" not in " ".join(__import__("platform").libc_ver()):
        pytest.skip("glibc only")
    assert _arenas(0) > 2
    assert _arenas(2) <= 2


def test_a_bad_arena_setting_is_a_clear_configuration_error(tmp_path):
    from helpline.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="malloc_arenas"):
        load_settings({"server": {"threads": 8, "malloc_arenas": -1}}, environ={})


MMAP_PROBE = """
import sys, threading
from helpline.server import limit_malloc_arenas, pin_mmap_threshold
from helpline.users import hash_password
limit_malloc_arenas(2)
if int(sys.argv[1]):
    assert pin_mmap_threshold(int(sys.argv[1]))
def rss_kib():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
before = rss_kib()
def log_ins():
    for _ in range(6):
        hash_password("correct horse battery")
threads = [threading.Thread(target=log_ins) for _ in range(2)]
for thread in threads: thread.start()
for thread in threads: thread.join()
print(rss_kib() - before)
"""


def _kept_after_log_ins_mib(threshold_kib: int) -> float:
    done = subprocess.run([sys.executable, "-c", MMAP_PROBE, str(threshold_kib)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return int(done.stdout) / 1024


def test_serve_pins_the_mmap_threshold_so_log_ins_give_their_memory_back():
    """Two threads checking passwords (19 MiB each, argon2): with glibc's moving threshold the
    process keeps tens of MiB afterwards; pinned, it gives them back."""
    if "glibc" not in " ".join(__import__("platform").libc_ver()):
        pytest.skip("glibc only")
    assert _kept_after_log_ins_mib(0) > 15
    assert _kept_after_log_ins_mib(1024) < 5


def test_the_mmap_threshold_defaults_to_1_mib_and_a_bad_one_is_a_clear_configuration_error():
    from helpline.config import ConfigError, load_settings

    assert load_settings(environ={}).server.malloc_mmap_threshold_kib == 1024
    for bad in (-1, 64 * 1024):
        with pytest.raises(ConfigError, match="malloc_mmap_threshold_kib"):
            load_settings({"server": {"threads": 8, "malloc_mmap_threshold_kib": bad}}, environ={})


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_open_consoles_cost_threads_on_sqlite_and_greenlets_on_postgresql(service, database_url):
    """Each open Socket.IO WebSocket holds a gunicorn thread and more under gthread (SQLite); under
    gevent (PostgreSQL) the worker keeps its handful of threads however many consoles are open."""
    import websocket  # websocket-client, which python-socketio's client uses

    from helpline.bench.stack import children_of

    (worker,) = children_of(service.popen.pid)
    before = _threads(worker)
    url = service.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    sockets = [websocket.create_connection(url, timeout=10) for _ in range(12)]
    try:
        for connection in sockets:
            assert connection.recv().startswith("0{")  # Engine.IO's open packet: the connection is being served
        during = _threads(worker)
    finally:
        for connection in sockets:
            connection.close()
    if database_url.startswith("postgresql"):
        assert during <= before + 2, (before, during)
    else:
        assert during >= before + 12, (before, during)


def test_the_worker_class_follows_the_database():
    assert worker_class("postgresql+psycopg://postgres@127.0.0.1/helpline") == "gevent"
    assert worker_class("sqlite:///instance/helpline.db") == "gthread"


LIGHT_MASTER_PROBE = """
import sys
import helpline.cli, helpline.server
heavy = {"flask", "sqlalchemy", "alembic", "socketio", "cryptography", "twilio", "apscheduler", "psycopg"}
print(sorted(heavy & {name.split(".")[0] for name in sys.modules}))
helpline.server.skip_unused_imports()
import engineio.async_client
print(engineio.async_client.aiohttp, "aiohttp" in sys.modules and sys.modules["aiohttp"] is not None)
"""


def test_the_supervising_process_imports_none_of_the_app_and_the_worker_skips_aiohttp():
    """gunicorn's master only supervises (the app is built in the worker), and engineio's unused
    asyncio client does not drag aiohttp into the worker."""
    done = subprocess.run([sys.executable, "-c", LIGHT_MASTER_PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[]", "None False"]


NO_REDIS_PROBE = """
import sys
from helpline.server import REDIS_IMPORTS, skip_unused_imports
skip_unused_imports(REDIS_IMPORTS)
from helpline import create_app
from helpline.config import load_settings
app = create_app(settings=load_settings({"instance_path": sys.argv[1]}, environ={}))
import socketio.redis_manager
print(socketio.redis_manager.redis, app.test_client().get("/healthz").status_code)
"""


def test_without_a_redis_url_the_worker_does_without_the_redis_client(tmp_path):
    """python-socketio imports redis for a message queue the service uses only with `redis_url`."""
    done = subprocess.run([sys.executable, "-c", NO_REDIS_PROBE, str(tmp_path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "200"]


def test_the_worker_freezes_its_start_up_heap_once_its_background_work_has_started(monkeypatch):
    """Full collections in a gevent worker stop every request: the app's start-up objects are moved
    out of the collector's sight once the worker is ready (server.freeze_heap)."""
    import gc

    from helpline import server

    captured: dict = {}
    monkeypatch.setattr(server._Gunicorn, "run", lambda self: captured.update(self.options))
    started: list[object] = []
    server.serve(lambda: None, "127.0.0.1", 0, "gevent", 1, in_worker=started.append, malloc_arenas=0)  # type: ignore[arg-type,return-value]

    class Worker:
        wsgi = object()

    gc.unfreeze()
    try:
        captured["post_worker_init"](Worker())
        assert started == [Worker.wsgi]
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()


def test_an_idle_connection_stays_open_longer_than_the_proxy_keeps_it(service):
    """nginx keeps idle upstream connections for `keepalive_timeout`; the service must keep them
    longer, or nginx may send a webhook down one the service is closing (a 502 for Twilio). Here a
    connection idle for 6 s - longer than gunicorn's default and our old 5 s - still carries a request."""
    import http.client
    import re
    import time
    from urllib.parse import urlsplit

    from helpline.config import PROJECT_ROOT
    from helpline.server import KEEPALIVE_S

    nginx = (PROJECT_ROOT / "deploy" / "nginx" / "helpline.conf").read_text()
    proxy_idle = [int(seconds) for seconds in re.findall(r"^\s*keepalive_timeout\s+(\d+)s;", nginx, re.MULTILINE)]
    assert len(proxy_idle) == 2 and max(proxy_idle) < KEEPALIVE_S  # both upstreams close idle connections first

    address = urlsplit(service.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    connection.request("GET", "/healthz")
    assert connection.getresponse().read() and connection.sock is not None
    first = connection.sock
    time.sleep(6)
    connection.request("GET", "/healthz")  # raises RemoteDisconnected if the service closed the connection
    response = connection.getresponse()
    assert response.status == 200 and connection.sock is first
    connection.close()
