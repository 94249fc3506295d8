"""The `helpline` command: serve, migrate, manage users, seed the demo, and the operator's tools."""

from __future__ import annotations

import socket
import sys

from typing import TYPE_CHECKING

import click

from .config import ConfigError, Settings, load_settings
from .ivr.flow import FlowError

if TYPE_CHECKING:
    from flask import Flask


class _Commands(click.Group):
    """The `helpline` group, with the commands that live beside their subsystems loaded on use.

    Click's lazy-loading pattern: `helpline serve` then imports none of the emulator, the bench or
    the scheduler, and its gunicorn master stays small (server.py).
    """

    #: name -> (module, attribute); the attribute is a command, or a dict of commands (admin_cli).
    LAZY = {
        "emulator": (".emulator.cli", "emulator"),
        "simulate-call": (".emulator.cli", "simulate_call"),
        "bench": (".bench.cli", "bench_command"),
        "twilio": (".twilio_setup", "twilio_group"),  # setup and check a real Twilio account
        # the operator's commands: audit, keys, retention, subject rights, staff access, wall screens
        **{name: (".admin_cli", "COMMANDS") for name in ("audit", "rotate-key", "purge", "export-subject", "erase-subject",
                                                              "sign-out-everywhere", "reset-mfa", "unlink-sign-in",
                                                              "display")},
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.LAZY})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY:
            import importlib

            module, attribute = self.LAZY[name]
            found = getattr(importlib.import_module(module, __package__), attribute)
            return found[name] if isinstance(found, dict) else found
        return super().get_command(ctx, name)


@click.group(cls=_Commands)
def cli() -> None:
    """The practitioner helpline."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the helpline (webhooks, console and API)."""
    from .server import serve as run_server, worker_class

    settings = load_settings()
    _preflight(settings)

    def build() -> Flask:
        from . import create_app
        from .server import REDIS_IMPORTS, skip_unused_imports

        if not settings.redis_url:
            skip_unused_imports(REDIS_IMPORTS)
        return create_app(settings=settings)

    def in_worker(app: Flask) -> None:
        """Background work, started in the serving worker (see server.py)."""
        from .realtime import adopt_identity, start_listening, start_queue_broadcaster, start_sweeper
        from .routing import start_router
        from .scheduler import start_for_serve
        from .supervision import start_wallboard

        adopt_identity(app, f"{socket.gethostname()}:{port}")  # a restart clears what the killed process left
        start_router(app)  # routing passes on a thread of their own, after each change that could let a call through
        start_sweeper(app)  # offers and wrap-ups that time out, callbacks that fall due
        start_queue_broadcaster(app)  # `queue` events to the consoles, coalesced under load
        start_listening()  # the Redis subscription from start-up, so that /healthz reports it
        start_wallboard(app)  # the supervisors' live figures, after changes and every few seconds
        start_for_serve(app)  # reminders, callbacks, reconciliation, purges (when scheduler.embedded)

    click.echo(f"helpline serving on http://{host}:{port} (public URL {settings.public_url})")
    run_server(build, host, port, worker_class(settings.resolved_database_url), settings.server.threads,
               in_worker=in_worker, malloc_arenas=settings.server.malloc_arenas,
               mmap_threshold_kib=settings.server.malloc_mmap_threshold_kib)


def _preflight(settings: Settings) -> None:
    """Stop, with the usual one-line reasons, if the service cannot start: checked in a child process.

    The app itself is built in gunicorn's worker, where a failure would end in a traceback and
    "worker failed to boot". So a short-lived child builds it first and reports what is wrong (an
    old schema, a bad flow or key), leaving this supervising process without the app's modules.
    """
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(1) as pool:
        problems = pool.apply(_startup_problems, (settings,))
    if problems is None:
        return
    if problems == [NOT_CURRENT]:
        raise click.ClickException(NOT_CURRENT)
    raise ConfigError(problems)


NOT_CURRENT = "the database is not up to date: run `helpline db upgrade` first"


def _startup_problems(settings: Settings) -> list[str] | None:
    from . import create_app
    from .db import db, is_current

    if not is_current(settings.resolved_database_url):
        return [NOT_CURRENT]
    try:
        create_app(settings=settings)
    except (ConfigError, FlowError) as exc:
        return exc.problems
    finally:
        db.dispose()
    return None


@cli.group("db")
def db_group() -> None:
    """The database."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the configured database to the newest schema, and refresh the reference
    data every installation needs (England's localities). Safe to run again."""
    from .db import Database, upgrade
    from .reference_data import load_localities

    settings = load_settings()
    upgrade(settings.resolved_database_url)
    database = Database()
    database.configure(settings.resolved_database_url)
    try:
        with database.transaction() as session:
            load_localities(session)
    finally:
        database.dispose()
    click.echo("database is up to date")


@cli.command("create-user")
@click.argument("name")
@click.option("--role", required=True, type=click.Choice(["handler", "supervisor", "clinician", "admin"]))
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@click.option("--display-name", default=None)
def create_user_command(name: str, role: str, password_stdin: bool, display_name: str | None) -> None:
    """Create a console user."""
    from .db import Database
    from .users import UserError, create_user

    if not password_stdin:
        raise click.UsageError("pass the password on standard input with --password-stdin")
    password = sys.stdin.readline().rstrip("\r\n")
    database = Database()
    database.configure(load_settings().resolved_database_url)
    try:
        with database.transaction() as session:
            create_user(session, name, role, password, display_name)
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        database.dispose()
    click.echo(f"created {role} {name.strip().lower()}")


@cli.command("scheduler")
def scheduler_command() -> None:
    """Run the reminder scheduler in the foreground (with several `serve` processes, run exactly one)."""
    import signal
    import time

    # Here, not at the top: `helpline serve`'s gunicorn master imports this module and should not
    # carry the app or the scheduler (see _Commands).
    from . import create_app
    from .db import is_current
    from .scheduler import shutdown, start

    settings = load_settings()
    if not is_current(settings.resolved_database_url):
        raise click.ClickException("the database is not up to date: run `helpline db upgrade` first")
    app = create_app(settings=settings)
    # A service manager stops us with SIGTERM: leave through `finally`, letting a running job finish.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    start(app)
    click.echo("helpline scheduler running; press Ctrl+C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        shutdown(app)


@cli.command("seed-demo")
def seed_demo_command() -> None:
    """Load demo users and data into an empty database, and print the demo log-ins."""
    from .demo import seed_demo

    for line in seed_demo(load_settings()):
        click.echo(line)


def main() -> None:
    """Entry point: a bad configuration or flow is reported as one line per problem, exit status 2."""
    try:
        cli(standalone_mode=False)
    except (ConfigError, FlowError) as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
