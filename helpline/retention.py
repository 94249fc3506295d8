"""Retention: personal data is kept only as long as `retention:` in the configuration says.

`purge(session, now)` applies every registered rule; the scheduler runs `purge_job` daily. A rule
removes or anonymises what is past its time and returns how many rows it touched. Other areas add
their own rules where their models live:

    from helpline.retention import retention_rule

    @retention_rule("discharged_contacts")
    def _purge_discharged(session, now, settings):
        cutoff = local_date(now) - dt.timedelta(days=settings.retention.discharged_record_days)
        ...
        return count

(That one is episodes.py's: first-contact records go `discharged_record_days` after discharge.)
`helpline purge --dry-run` runs every rule and rolls each back, to say what a purge would touch.

Anonymised calls keep what statistics need (when, how long, the outcome, where in the menu it was
settled, the need) and lose what could lead back to the caller: the number and its keyed hash, the
Twilio call SID (Twilio's own logs map it to the number), the step-by-step timeline and replies.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from flask import Flask, current_app
from sqlalchemy import String, cast, delete, literal, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from . import audit
from .config import Settings
from .db import db
from .models import Call, CallEvent, LoginFailure, PublicSubmission, QueueEntry, WebhookReply, utcnow

log = logging.getLogger(__name__)

#: An anonymised call's SID: unique, and says plainly what happened to it.
PURGED_PREFIX = "purged-"
BATCH = 500

Rule = Callable[[Session, dt.datetime, Settings], int]


@dataclass(frozen=True)
class PurgeRule:
    """A named retention rule: `apply(session, now, settings)` returns the rows it removed or anonymised."""

    name: str
    apply: Rule


_RULES: dict[str, PurgeRule] = {}


def retention_rule(name: str) -> Callable[[Rule], Rule]:
    """Register a purge rule under `name` (registering the same name again replaces it)."""

    def register(function: Rule) -> Rule:
        _RULES[name] = PurgeRule(name, function)
        return function

    return register


def rules() -> list[PurgeRule]:
    """The registered rules, in the order they were first registered."""
    return list(_RULES.values())


# -- anonymising calls ------------------------------------------------------------------------------


def anonymise_calls(session: Session, call_ids: Iterable[int], keep_timeline: bool = False) -> int:
    """Strip the calls `call_ids` of anything that leads back to the caller; returns how many changed.

    With `keep_timeline`, only the number, its hash and the call SID go (abandoned calls, whose
    timelines feed the figures on where callers give up).
    """
    ids = sorted(set(call_ids))
    changed = 0
    sid_columns = [column for column in QueueEntry.__table__.columns if column.name.endswith("_sid")]
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        sids = list(session.scalars(select(Call.call_sid).where(Call.id.in_(chunk), ~Call.call_sid.startswith(PURGED_PREFIX))))
        if sids:
            session.execute(delete(WebhookReply).where(WebhookReply.call_sid.in_(sids)))
        values: dict[str, Any] = {
            "caller_number_enc": None,
            "caller_hash": None,
            "request_enc": None,  # what a web request said (email, name, message)
            "call_sid": literal(PURGED_PREFIX) + cast(Call.id, String),
        }
        if not keep_timeline:
            values["ivr_path"] = []
            session.execute(delete(CallEvent).where(CallEvent.call_id.in_(chunk)))
        if sid_columns:
            # Twilio SIDs of the call's other legs (conference, the handler's leg, a rung-back caller).
            session.execute(update(QueueEntry).where(QueueEntry.call_id.in_(chunk)).values({column.name: None for column in sid_columns}))
        result = session.execute(update(Call).where(Call.id.in_(chunk)).values(values).execution_options(synchronize_session=False))
        changed += result.rowcount or 0
    session.expire_all()
    return changed


def _not_yet_anonymised() -> ColumnElement[bool]:
    return or_(~Call.call_sid.startswith(PURGED_PREFIX), Call.caller_number_enc.is_not(None), Call.caller_hash.is_not(None),
               Call.request_enc.is_not(None))


def _old_calls(session: Session, outcome: str, cutoff: dt.datetime) -> list[int]:
    return list(session.scalars(select(Call.id).where(Call.outcome == outcome, Call.started_at < cutoff, _not_yet_anonymised())))


@retention_rule("third_party_calls")
def _third_party(session: Session, now: dt.datetime, settings: Settings) -> int:
    cutoff = now - dt.timedelta(days=settings.retention.third_party_days)
    return anonymise_calls(session, _old_calls(session, "third_party", cutoff))


@retention_rule("ineligible_calls")
def _ineligible(session: Session, now: dt.datetime, settings: Settings) -> int:
    cutoff = now - dt.timedelta(days=settings.retention.ineligible_days)
    return anonymise_calls(session, _old_calls(session, "ineligible", cutoff))


@retention_rule("abandoned_numbers")
def _abandoned(session: Session, now: dt.datetime, settings: Settings) -> int:
    cutoff = now - dt.timedelta(days=settings.retention.abandoned_days)
    return anonymise_calls(session, _old_calls(session, "abandoned", cutoff), keep_timeline=True)


@retention_rule("webhook_replies")
def _webhook_replies(session: Session, now: dt.datetime, settings: Settings) -> int:
    cutoff = now - dt.timedelta(days=settings.retention.webhook_replies_days)
    return session.execute(delete(WebhookReply).where(WebhookReply.created_at < cutoff)).rowcount or 0


@retention_rule("login_failures")
def _login_failures(session: Session, now: dt.datetime, settings: Settings) -> int:
    # They only count within the lockout window; a day's margin keeps them useful to look back on.
    cutoff = now - max(dt.timedelta(minutes=settings.security.lockout_minutes), dt.timedelta(days=1))
    return session.execute(delete(LoginFailure).where(LoginFailure.at < cutoff)).rowcount or 0


@retention_rule("public_submissions")
def _public_submissions(session: Session, now: dt.datetime, settings: Settings) -> int:
    # The web form's per-address marks count only within the rate limit's hour (public/referrals.py).
    return session.execute(delete(PublicSubmission).where(PublicSubmission.at < now - dt.timedelta(days=1))).rowcount or 0


# -- running the rules ------------------------------------------------------------------------------


def purge(session: Session, now: dt.datetime | None = None, settings: Settings | None = None,
          only: Iterable[str] | None = None) -> dict[str, int]:
    """Apply every rule (or those named in `only`) in `session`; the caller commits. Returns counts by rule."""
    now = now or utcnow()
    settings = settings or current_app.config["HELPLINE"]
    wanted = set(only) if only is not None else None
    counts = {}
    for rule in rules():
        if wanted is None or rule.name in wanted:
            counts[rule.name] = rule.apply(session, now, settings)
    if any(counts.values()):
        # Audited when it changed something: a night with nothing past its time changed no one's data.
        audit.record(session, audit.Actor.system("retention"), "retention.purge", counts=counts)
    return counts


def purge_job(app: Flask | None = None, dry_run: bool = False) -> dict[str, int]:
    """The scheduler's daily job: each rule in its own short transaction, so webhooks never wait long.

    Uses `app`, or the current app (the scheduler runs every job inside its app's context): an app
    built by `create_app`, which is also what registers every area's rules. With `dry_run`, each
    rule's transaction is rolled back: the counts say what the purge would remove or anonymise now,
    and nothing changes (nor is anything audited).
    """
    if app is None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
    with app.app_context():
        settings = app.config["HELPLINE"]
        totals: dict[str, int] = {}
        now = utcnow()
        for rule in rules():
            with db.transaction() as session:
                totals.update(purge(session, now, settings, only=[rule.name]))
                if dry_run:
                    session.rollback()
        touched = {name: count for name, count in totals.items() if count}
        log.info("retention purge%s: %s", " (dry run, nothing changed)" if dry_run else "", touched or "nothing past its time")
        return totals
