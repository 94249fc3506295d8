"""The `helpline` command: serve, migrate, manage users, seed the demo, and the operator's tools."""

from __future__ import annotations

import socket
import sys

import click

from .config import ConfigError, load_settings
from .ivr.flow import FlowError


@click.group()
def cli() -> None:
    """The practitioner helpline."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Serve the helpline (webhooks, console and API)."""
    from . import create_app
    from .db import is_current
    from .server import serve as run_server

    settings = load_settings()
    if not is_current(settings.resolved_database_url):
        raise click.ClickException("the database is not up to date: run `helpline db upgrade` first")
    app = create_app(settings=settings)
    from .realtime import adopt_identity, start_queue_broadcaster, start_sweeper
    from .routing import start_router
    from .scheduler import start_for_serve
    from .supervision import start_wallboard

    def in_worker() -> None:
        """Background work, started in the serving worker (see server.py)."""
        adopt_identity(app, f"{socket.gethostname()}:{port}")  # a restart clears what the killed process left
        start_router(app)  # routing passes on a thread of their own, after each change that could let a call through
        start_sweeper(app)  # offers and wrap-ups that time out, callbacks that fall due
        start_queue_broadcaster(app)  # `queue` events to the consoles, coalesced under load
        start_wallboard(app)  # the supervisors' live figures, after changes and every few seconds
        start_for_serve(app)  # reminders, callbacks, reconciliation, purges (when scheduler.embedded)

    click.echo(f"helpline serving on http://{host}:{port} (public URL {settings.public_url})")
    run_server(app, host, port, settings.server.threads, in_worker=in_worker, malloc_arenas=settings.server.malloc_arenas)


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


@cli.command("seed-demo")
def seed_demo_command() -> None:
    """Load demo users and data into an empty database, and print the demo log-ins."""
    from .demo import seed_demo

    for line in seed_demo(load_settings()):
        click.echo(line)


def _register_optional() -> None:
    """Commands that live beside their subsystems."""
    from .emulator.cli import emulator, simulate_call

    cli.add_command(emulator, "emulator")
    cli.add_command(simulate_call, "simulate-call")
    from .scheduler import scheduler_command

    cli.add_command(scheduler_command, "scheduler")
    from .bench.cli import bench_command

    cli.add_command(bench_command, "bench")
    from .admin_cli import COMMANDS as admin_commands  # audit, rotate-key, purge, export-/erase-subject

    for name, command in admin_commands.items():
        cli.add_command(command, name)


def main() -> None:
    """Entry point: a bad configuration or flow is reported as one line per problem, exit status 2."""
    _register_optional()
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
