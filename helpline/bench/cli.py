"""`helpline bench`: start the service and the emulator, drive the load, print and write the figures."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import click

from .stack import StackOptions, running

#: Where a PostgreSQL run creates its fresh database, unless --postgres-url says otherwise.
DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def _setup_line(database: str, redis_url: str | None, processes: int) -> str:
    return (f"{database}, {processes} serving process{'es' if processes > 1 else ''}"
            + (", Socket.IO through Redis" if redis_url else "") + f", {os.cpu_count()} CPUs")


@click.command("bench")
@click.option("--mode", type=click.Choice(["paced", "saturated", "burst"]), default="paced", show_default=True,
              help="paced: callers at a realistic pace with handlers answering; saturated: webhooks back to back; "
                   "burst: a thousand callers within a minute, a few handlers answering.")
@click.option("--callers", default=None, type=click.IntRange(1, 5000), help="Callers [default: 200; burst: 1000].")
@click.option("--handlers", default=None, type=click.IntRange(1, 500), help="Handlers [default: 50; burst: 20].")
@click.option("--database", type=click.Choice(["sqlite", "postgresql"]), default="sqlite", show_default=True)
@click.option("--postgres-url", default=None,
              help=f"PostgreSQL server to create the run's database on [default: $HELPLINE_TEST_POSTGRES_URL or {DEFAULT_POSTGRES_URL}].")
@click.option("--redis", "redis_url", is_flag=False, flag_value=DEFAULT_REDIS_URL, default=None,
              help=f"Carry Socket.IO events through this Redis (bare --redis: {DEFAULT_REDIS_URL}).")
@click.option("--processes", default=1, show_default=True, type=click.IntRange(1, 16), help="`helpline serve` processes.")
@click.option("--time-scale", default=None, type=click.FloatRange(0.01, 1.0),
              help="The emulator's time scale: how long prompts take (0.4 = two and a half times faster than life) "
                   "[default: 0.4; burst: 1.0, callers who hear prompts and hold music as long as real ones do].")
@click.option("--ramp", "ramp_s", default=None, type=click.FloatRange(0.0),
              help="Seconds over which callers ring in [default: paced, handlers two-thirds busy; burst: 60].")
@click.option("--talk", "talk_s", default="2,4", show_default=True, help="Seconds a handler talks: MIN,MAX.")
@click.option("--book-every", default=5, show_default=True, type=click.IntRange(0), help="Book on one call in N (0 = never).")
@click.option("--duration", "saturated_s", default=10.0, show_default=True, type=click.FloatRange(1.0),
              help="Saturated mode: seconds of load per app.")
@click.option("--decision-calls", default=10_000, show_default=True, type=click.IntRange(0),
              help="Waiting calls for the routing-decision timing (0 = skip it).")
@click.option("--output", "output_dir", default="bench-results", show_default=True, type=click.Path(file_okay=False),
              help="Folder for bench.json and bench.png.")
@click.option("--keep", is_flag=True, help="Keep the run's folder (logs, SQLite file) and PostgreSQL database.")
@click.option("--seed", default=8, show_default=True, type=int)
@click.option("--fault", type=click.Choice(["redis", "postgresql", "kill"]), default=None,
              help="Inject a fault mid-run: kill the run's own Redis, stop its own PostgreSQL, or SIGKILL a serving "
                   "process (webhooks then go through a failover proxy). The run starts a PostgreSQL and a Redis of "
                   "its own for it, never using the machine's.")
@click.option("--fault-at", "fault_at_s", default=10.0, show_default=True, type=click.FloatRange(0.0),
              help="Seconds after the first caller rings that the fault begins.")
@click.option("--fault-for", "fault_for_s", default=15.0, show_default=True, type=click.FloatRange(0.0),
              help="Seconds the fault lasts before the server or process is started again.")
def bench_command(mode: str, callers: int | None, handlers: int | None, database: str, postgres_url: str | None, redis_url: str | None,
                  processes: int, time_scale: float | None, ramp_s: float | None, talk_s: str, book_every: int, saturated_s: float,
                  decision_calls: int, output_dir: str, keep: bool, seed: int, fault: str | None, fault_at_s: float,
                  fault_for_s: float) -> None:
    """Benchmark the helpline: the service, the Twilio emulator and emulated callers and handlers, all started here."""
    burst = mode == "burst"
    callers = callers if callers is not None else 1000 if burst else 200
    handlers = handlers if handlers is not None else 20 if burst else 50
    if burst and ramp_s is None:
        ramp_s = 60.0
    if time_scale is None:
        # A burst is callers arriving faster than life, not calls going faster: at a shorter scale
        # each waiting caller's hold music would end, and ask the service what to say next, sooner
        # than any real caller's does.
        time_scale = 1.0 if burst else 0.4
    if fault is not None:
        if mode != "paced":
            raise click.UsageError("--fault needs --mode paced (callers and handlers to judge it by)")
        if postgres_url or redis_url:
            raise click.UsageError("--fault starts a PostgreSQL and a Redis of its own: leave out --postgres-url and --redis")
        if fault == "kill" and processes < 2:
            raise click.UsageError("--fault kill needs --processes 2 or more (a live process to fail over to)")
        with _own_servers() as (postgres, redis_server):
            _run(mode, callers, handlers, "postgresql", postgres.url, redis_server.url, processes, time_scale, ramp_s,
                 talk_s, book_every, saturated_s, decision_calls, output_dir, keep, seed,
                 (fault, fault_at_s, fault_for_s, postgres, redis_server))
        return
    _run(mode, callers, handlers, database, postgres_url, redis_url, processes, time_scale, ramp_s, talk_s, book_every,
         saturated_s, decision_calls, output_dir, keep, seed, None)


@contextlib.contextmanager
def _own_servers() -> Iterator[tuple[Any, Any]]:
    """A PostgreSQL and a Redis started for this run alone (servers.py), removed afterwards."""
    from .servers import OwnPostgres, OwnRedis, ServerMissing

    click.echo("starting a PostgreSQL and a Redis of the run's own ...", err=True)
    try:
        postgres = OwnPostgres().create()
    except ServerMissing as exc:
        raise click.ClickException(str(exc)) from None
    folder = Path(tempfile.mkdtemp(prefix="helpline-bench-redis-"))
    redis_server = OwnRedis(folder)
    try:
        try:
            redis_server.start()
        except ServerMissing as exc:
            raise click.ClickException(str(exc)) from None
        yield postgres, redis_server
    finally:
        redis_server.destroy()
        shutil.rmtree(folder, ignore_errors=True)
        postgres.destroy()


def _run(mode: str, callers: int, handlers: int, database: str, postgres_url: str | None, redis_url: str | None,
         processes: int, time_scale: float, ramp_s: float | None, talk_s: str, book_every: int, saturated_s: float,
         decision_calls: int, output_dir: str, keep: bool, seed: int, fault: tuple[Any, ...] | None) -> None:
    from . import report

    if processes > 1 and database == "sqlite":
        raise click.UsageError("several processes need --database postgresql (SQLite is for one process)")
    if processes > 1 and not redis_url:
        raise click.UsageError("several processes need --redis to share Socket.IO events")
    try:
        low, high = (float(part) for part in talk_s.split(","))
    except ValueError:
        raise click.BadParameter("give MIN,MAX seconds, e.g. 2,4", param_hint="--talk") from None
    if database == "postgresql":
        postgres_url = postgres_url or os.environ.get("HELPLINE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="helpline-bench-"))
    results: dict[str, Any] = {"mode": mode, "setup": _setup_line(database, redis_url, processes),
                               "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                               "machine": report.machine(),
                               "options": {"callers": callers, "handlers": handlers, "database": database, "processes": processes,
                                           "redis": bool(redis_url), "time_scale": time_scale, "talk_s": [low, high],
                                           "book_every": book_every, "seed": seed,
                                           "fault": None if fault is None else {"kind": fault[0], "at_s": fault[1],
                                                                                "for_s": fault[2]}}}
    try:
        options = StackOptions(workdir=workdir, database=database, postgres_url=postgres_url, redis_url=redis_url,
                               processes=processes, time_scale=time_scale, keep_database=keep,
                               consoles_per_process=-(-handlers // processes) if mode in ("paced", "burst") else 0,
                               proxy=fault is not None and fault[0] == "kill")
        if mode == "paced":
            # Imported here: the emulated consoles need the `bench` extra (Socket.IO client, WebSocket).
            from .handlers import Pace
            from .paced import PacedOptions, run_paced

            click.echo(f"starting {results['setup']} ...", err=True)
            with running(options) as stack:
                click.echo(f"running {callers} callers and {handlers} handlers ...", err=True)
                paced = PacedOptions(callers=callers, handlers=handlers, ramp_s=ramp_s, seed=seed,
                                     pace=Pace(talk_s=(low, high), book_every=book_every))
                planned = None
                if fault is not None:
                    from .faults import FaultPlan, FaultServers

                    kind, at_s, for_s, postgres, redis_server = fault
                    planned = (FaultPlan(kind, at_s, for_s), FaultServers(postgres, redis_server))
                    click.echo(f"fault: {kind} at {at_s:g}s for {for_s:g}s", err=True)
                results.update(run_paced(stack, paced, planned))
                if stack.scheduler_note:
                    results.setdefault("notes", []).append(stack.scheduler_note)
        elif mode == "burst":
            from .burst import BurstOptions, run_burst
            from .handlers import Pace

            click.echo(f"starting {results['setup']} ...", err=True)
            with running(options) as stack:
                click.echo(f"ringing in {callers} callers over {ramp_s:g}s to {handlers} handlers ...", err=True)
                assert ramp_s is not None
                results.update(run_burst(stack, BurstOptions(callers=callers, handlers=handlers, ramp_s=ramp_s, seed=seed,
                                                             pace=Pace(talk_s=(low, high), book_every=book_every))))
                if stack.scheduler_note:
                    results.setdefault("notes", []).append(stack.scheduler_note)
        else:
            from .saturated import run_saturated

            click.echo(f"saturating {results['setup']} and a bare Flask app ...", err=True)
            results.update(run_saturated(options, seconds=saturated_s))
        results["peak_rss_mb"] = report.peak_rss_mb(results.get("memory", {}))
        results["cpu_s"] = report.cpu_seconds(results.get("memory", {}))
        if decision_calls:
            from .decision import time_routing_decision

            click.echo(f"timing the routing decision with {decision_calls} waiting calls ...", err=True)
            results["routing_decision"] = time_routing_decision(database, postgres_url, decision_calls, workdir)
    finally:
        if keep:
            click.echo(f"kept the run's folder: {workdir}", err=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report.write_json(results, output / "bench.json")
    report.write_chart(results, output / "bench.png")
    for line in report.table(results):
        click.echo(line)
    click.echo(f"wrote {output / 'bench.json'} and {output / 'bench.png'}")
