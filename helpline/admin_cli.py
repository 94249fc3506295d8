"""The operator's commands for the audit log, key rotation, retention and a person's data rights.

Each command builds the app from the configuration (so every area's encrypted columns, purge rules
and data sources are registered) and is itself audited, with the operating-system account as actor.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Iterator

import click
from flask import Flask
from sqlalchemy import select

from . import audit, create_app, display, episodes, keys, mfa, staff_sessions, subjects
from .audit import Actor
from .config import load_settings
from .db import db, is_current
from .models import DisplayToken, User, utcnow
from .retention import purge_job


@contextmanager
def _service() -> Iterator[Flask]:
    """The app, in an app context, on an up-to-date database."""
    settings = load_settings()
    if not is_current(settings.resolved_database_url):
        raise click.ClickException("the database is not up to date: run `helpline db upgrade` first")
    app = create_app(settings=settings)
    try:
        with app.app_context():
            yield app
    finally:
        db.dispose()


# -- audit -----------------------------------------------------------------------------------------


@click.group("audit")
def audit_group() -> None:
    """The audit log: check its chain, search it."""


@audit_group.command("verify")
def audit_verify() -> None:
    """Check every entry's hash chain; name the first entry that does not fit (exit status 1)."""
    with _service():
        with db.transaction() as session:
            result = audit.verify(session)
    if not result.ok:
        click.echo(f"audit log BROKEN at entry {result.broken_seq}: {result.problem} "
                   f"({result.entries} entries before it are intact)", err=True)
        sys.exit(1)
    click.echo(f"audit log intact: {result.entries} entries; head #{result.head_seq} {result.head_hash}")


@audit_group.command("search")
@click.option("--user", help="User id or username.")
@click.option("--action", help="An action, or a prefix ending in '.' (auth.).")
@click.option("--since", help="ISO date or date-time (inclusive).")
@click.option("--until", help="ISO date (inclusive) or date-time (exclusive).")
@click.option("--object", "object_", help="type or type:id, for example contact:12.")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit_search(user: str | None, action: str | None, since: str | None, until: str | None,
                 object_: str | None, limit: int, as_json: bool) -> None:
    """Search the audit log, newest first."""
    with _service():
        with db.transaction() as session:
            user_id = None
            if user:
                user_id = audit.user_id_for(session, user)
                if user_id is None:
                    raise click.ClickException(f"no user {user!r}")
            object_type, _, object_id = (object_ or "").partition(":")
            try:
                filters = audit.Filters(
                    user_id=user_id,
                    action=action,
                    since=audit.parse_when(since) if since else None,
                    until=audit.parse_when(until, end_of_day=True) if until else None,
                    object_type=object_type or None,
                    object_id=object_id or None,
                    limit=limit,
                )
            except ValueError as exc:
                raise click.BadParameter(str(exc)) from None
            entries = [audit.as_dict(entry) for entry in audit.search(session, filters)]
            audit.record(session, audit.Actor.operator(), "audit.search", via="cli",
                         filters={k: v for k, v in {"user": user, "action": action, "since": since, "until": until,
                                                     "object": object_}.items() if v})
    for entry in entries:
        if as_json:
            click.echo(json.dumps(entry, ensure_ascii=False))
            continue
        actor = entry["actor"]
        who = f"user {actor['id']} ({actor['role']})" if actor["id"] is not None else f"{actor['role']} {actor['label'] or ''}".strip()
        what = ""
        if entry["object"]:
            what = f" {entry['object']['type']}" + (f":{entry['object']['id']}" if entry["object"]["id"] else "")
        why = f" because {entry['reason']!r}" if entry["reason"] else ""
        detail = f" {json.dumps(entry['detail'], ensure_ascii=False)}" if entry["detail"] else ""
        click.echo(f"#{entry['seq']} {entry['at']} {who} {entry['action']}{what}{why}{detail}")


# -- keys ------------------------------------------------------------------------------------------


@click.command("rotate-key")
@click.option("--batch-size", default=200, show_default=True, type=click.IntRange(1, 10_000),
              help="Rows per transaction: smaller holds locks for less time.")
def rotate_key(batch_size: int) -> None:
    """Re-encrypt every personal field under the first key of HELPLINE_ENCRYPTION_KEY ("new,old").

    Safe while the service runs and safe to run again; when it reports that every field opens with
    the newest key alone, the old key can be removed.
    """
    with _service() as app:
        key_text = keys.resolve_keys(app.config["HELPLINE"])
        if len(keys.split_keys(key_text)) < 2:
            click.echo("only one key is configured: fields are re-encrypted under it, which is a check, "
                       "not a rotation (set HELPLINE_ENCRYPTION_KEY=\"new,old\" to rotate)", err=True)

        def progress(table: str, rows: int) -> None:
            click.echo(f"  {table}: {rows} rows", err=True)

        report = keys.rotate(db, key_text, batch_size=batch_size, progress=progress)
        left = keys.unreadable_with_newest(db, key_text)
        with db.transaction() as session:
            audit.record(session, audit.Actor.operator(), "keys.rotate",
                         rewritten=report.rows_rewritten, fields=report.fields_reencrypted,
                         hashes=report.hashes_recomputed + report.hashes_translated,
                         unreadable=len(report.unreadable), left_under_old_keys=len(left))
    click.echo(f"examined {report.rows_examined} rows; rewrote {report.rows_rewritten} "
               f"({report.fields_reencrypted} fields re-encrypted, {report.hashes_recomputed} hashes recomputed, "
               f"{report.hashes_translated} translated, {report.hashes_unmatched} with no number left to match)")
    for table, key, column in report.unreadable:
        click.echo(f"cannot decrypt {table}.{column} of row {key} with any configured key", err=True)
    if report.unreadable:
        sys.exit(1)
    if left:
        click.echo(f"{len(left)} fields still need an older key (changed during the run): run it again", err=True)
        sys.exit(1)
    click.echo("every encrypted field opens with the newest key alone: older keys can be removed")


# -- retention -------------------------------------------------------------------------------------


@click.command("purge")
@click.option("--dry-run", is_flag=True, help="Say what would be removed or anonymised now, and change nothing.")
def purge_command(dry_run: bool) -> None:
    """Apply the retention periods now (the scheduler does this daily)."""
    with _service() as app:
        counts = purge_job(app, dry_run=dry_run)
    if dry_run:
        click.echo("dry run: nothing was changed; a purge now would remove or anonymise")
    for name, count in counts.items():
        click.echo(f"{name}: {count}")


# -- a person's data -------------------------------------------------------------------------------

_who = [
    click.option("--caller-number", "numbers", multiple=True, help="The person's phone number (any common form)."),
    click.option("--contact-id", "contact_ids", multiple=True, type=int, help="A first-contact record's id."),
    click.option("--reason", required=True, help="Why (recorded in the audit log), e.g. a request reference."),
]


def _with_who(command):  # type: ignore[no-untyped-def]
    for option in reversed(_who):
        command = option(command)
    return command


def _find(session, key_text: str, numbers: tuple[str, ...], contact_ids: tuple[int, ...], reason: str):  # type: ignore[no-untyped-def]
    if not numbers and not contact_ids:
        raise click.UsageError("name the person with --caller-number or --contact-id")
    if not reason.strip():
        raise click.UsageError("--reason must say why")
    try:
        return subjects.find(session, key_text, numbers, contact_ids)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--caller-number") from None


@click.command("export-subject")
@_with_who
def export_subject(numbers: tuple[str, ...], contact_ids: tuple[int, ...], reason: str) -> None:
    """Print, as JSON, everything held about a person (decrypted). Audited with the reason."""
    with _service() as app:
        key_text = keys.resolve_keys(app.config["HELPLINE"])
        with db.transaction() as session:
            subject = _find(session, key_text, numbers, contact_ids, reason)
            data = subjects.export(session, key_text, subject)
            audit.record(session, audit.Actor.operator(), "subject.export", "subject", None, reason=reason,
                         **subject.describe())
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.command("erase-subject")
@_with_who
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def erase_subject(numbers: tuple[str, ...], contact_ids: tuple[int, ...], reason: str, yes: bool) -> None:
    """Erase a person's personal data everywhere, keeping anonymous statistics. Audited with the reason."""
    with _service() as app:
        key_text = keys.resolve_keys(app.config["HELPLINE"])
        with db.transaction() as session:
            subject = _find(session, key_text, numbers, contact_ids, reason)
            if not subject.found:
                click.echo("nothing is held about this person", err=True)
                audit.record(session, audit.Actor.operator(), "subject.erase", "subject", None, reason=reason,
                             **subject.describe())
                return
            described = subject.describe()
            click.echo(f"found {len(described['calls'])} calls and {len(described['contacts'])} first-contact records", err=True)
            upcoming = episodes.appointments_to_come(session, subject.contact_ids)
            if upcoming:
                click.echo(f"{upcoming} appointments still to come will be removed from their clinicians' diaries: "
                           "tell the clinicians first", err=True)
            if not yes:
                click.confirm("erase this person's personal data? This cannot be undone", abort=True, err=True)
            counts = subjects.erase(session, subject)
            audit.record(session, audit.Actor.operator(), "subject.erase", "subject", None, reason=reason,
                         rows=counts, **described)
    click.echo("erased: " + ", ".join(f"{name} {count}" for name, count in counts.items()))


# -- staff access ------------------------------------------------------------------------------------


def _user_named(session, name: str):  # type: ignore[no-untyped-def]
    user = session.scalar(select(User).where(User.username == name.strip().lower()))
    if user is None:
        raise click.ClickException(f"no user named {name!r}")
    return user


@click.command("sign-out-everywhere")
@click.argument("name")
def sign_out_everywhere(name: str) -> None:
    """End every session of user NAME (a lost laptop, someone leaving); their consoles close too."""
    with _service():
        with db.transaction() as session:
            user = _user_named(session, name)
            ended = staff_sessions.revoke_all(session, user.id, "signed_out_everywhere", actor=Actor.operator())
    click.echo(f"{name}: {ended} session{'s' if ended != 1 else ''} ended")


@click.command("reset-mfa")
@click.argument("name")
def reset_mfa(name: str) -> None:
    """Remove user NAME's second factor and recovery codes (a lost phone and lost codes): they set it
    up again at their next log-in. Their sessions end."""
    with _service():
        with db.transaction() as session:
            user = _user_named(session, name)
            mfa.reset(session, user)
            staff_sessions.revoke_all(session, user.id, "mfa_reset", actor=audit.Actor.operator())
            audit.record(session, audit.Actor.operator(), "auth.mfa_reset", "user", user.id)
    click.echo(f"{name}: second factor removed; they will set it up again at their next log-in")


@click.command("unlink-sign-in")
@click.argument("name")
def unlink_sign_in(name: str) -> None:
    """Forget which identity-provider account signs in as user NAME (the account was given to someone
    else at the provider, or NAME moved to a new one): the next sign-in through the provider as NAME
    links afresh. Their sessions end."""
    from . import audit, staff_sessions
    from .db import db

    with _service():
        with db.transaction() as session:
            user = _user_named(session, name)
            if user.oidc_subject is None:
                click.echo(f"{name}: no sign-in through an identity provider is linked")
                return
            issuer = user.oidc_issuer
            user.oidc_issuer = user.oidc_subject = None
            staff_sessions.revoke_all(session, user.id, "oidc_unlinked", actor=audit.Actor.operator())
            # The issuer, never the subject: the audit log names accounts here, not people elsewhere.
            audit.record(session, audit.Actor.operator(), "auth.oidc_unlinked", "user", user.id, issuer=issuer)
    click.echo(f"{name}: unlinked from {issuer}; their next sign-in there links afresh")


# -- display-only wall screens (helpline/display.py) ---------------------------------------------------

@click.group("display")
def display_group() -> None:
    """Display-only wall screens for the wallboard: create, list, revoke."""


@display_group.command("create")
@click.argument("name")
def create_command(name: str) -> None:
    """Allow a new wall screen; prints its address (with its token) once."""

    with _service() as app:
        screen, token = display.create(db.session, name)
        audit.record(db.session, audit.Actor.operator(), "display.create", "display_token", screen.id)
        db.session.commit()
        base = app.config["HELPLINE"].public_url
        click.echo(f"screen {screen.id} ({screen.name}): open {base}/display#token={token}")
        click.echo("The token is shown only now; `helpline display revoke "
                   f"{screen.id}` stops this screen.")


@display_group.command("list")
def list_command() -> None:
    """Every wall screen, when it last read the figures, and whether it is revoked."""

    with _service():
        for screen in db.session.scalars(select(DisplayToken).order_by(DisplayToken.id)):
            seen = screen.last_seen_at.isoformat(timespec="seconds") if screen.last_seen_at else "never"
            state = f"revoked {screen.revoked_at.isoformat(timespec='seconds')}" if screen.revoked_at else "active"
            click.echo(f"{screen.id}\t{screen.name}\tlast seen {seen}\t{state}")


@display_group.command("revoke")
@click.argument("screen_id", type=int)
def revoke_command(screen_id: int) -> None:
    """Stop a wall screen: it reads nothing from its next refresh on."""

    with _service():
        screen = display.revoke(db.session, screen_id, utcnow())
        if screen is None:
            raise click.ClickException(f"no screen {screen_id}")
        audit.record(db.session, audit.Actor.operator(), "display.revoke", "display_token", screen.id)
        db.session.commit()
        click.echo(f"screen {screen.id} ({screen.name}) revoked")


#: What `helpline.cli` registers.
COMMANDS = {
    "sign-out-everywhere": sign_out_everywhere,
    "reset-mfa": reset_mfa,
    "unlink-sign-in": unlink_sign_in,
    "audit": audit_group,
    "rotate-key": rotate_key,
    "purge": purge_command,
    "export-subject": export_subject,
    "erase-subject": erase_subject,
    "display": display_group,
}
