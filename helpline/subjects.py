"""A person's rights under UK GDPR: export everything held about them, or erase it.

A person is found by their phone number or by a first-contact record, and the search follows links
until it stops finding more: a number finds calls (by keyed hash, under every configured key), a
call gives its number, a first-contact record gives its call, and so on. Each area that holds
personal data registers a `SubjectSource` saying how to follow its links, export its rows and erase
them; calls are registered here, first-contact records with their appointments, risk screens and
questionnaires by episodes.py:

    register_subject_source(SubjectSource("contacts", expand=..., export=..., erase=...))

Erasing keeps what statistics need and nothing that leads back to the person (see retention.py).
Both are audited by the caller (the CLI) with the reason given.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from .crypto import Vault
from .keys import is_encrypted, vaults
from .models import Call, CallEvent, QueueEntry, utcnow
from .phone import normalise
from .retention import anonymise_calls


@dataclass
class Subject:
    """What identifies one person in the records: numbers (E.164), call ids, first-contact ids."""

    numbers: set[str] = field(default_factory=set)
    call_ids: set[int] = field(default_factory=set)
    contact_ids: set[int] = field(default_factory=set)

    def snapshot(self) -> tuple[int, int, int]:
        """Sizes, to tell when following links has stopped finding more."""
        return len(self.numbers), len(self.call_ids), len(self.contact_ids)

    @property
    def found(self) -> bool:
        """Whether any record was found."""
        return bool(self.call_ids or self.contact_ids)

    def describe(self) -> dict[str, Any]:
        """Record ids only (what the audit log may hold)."""
        return {"calls": sorted(self.call_ids), "contacts": sorted(self.contact_ids)}


@dataclass(frozen=True)
class SubjectSource:
    """How one area finds, exports and erases a person's data.

    - `expand(session, subject, keys)`: add identifiers this area can derive (`keys` is the configured
      key string: `helpline.keys.vaults(keys)` gives one Vault per key, for keyed hashes made
      under an older key);
    - `export(session, subject, vault)`: everything held, decrypted, as JSON-ready data;
    - `erase(session, subject)`: remove or anonymise it; returns the rows touched.
    """

    name: str
    expand: Callable[[Session, Subject, str], None]
    export: Callable[[Session, Subject, Vault], Any]
    erase: Callable[[Session, Subject], int]


_SOURCES: dict[str, SubjectSource] = {}


def register_subject_source(source: SubjectSource) -> None:
    """Add (or replace, by name) a source of personal data."""
    _SOURCES[source.name] = source


def sources() -> list[SubjectSource]:
    """Registered sources in registration order."""
    return list(_SOURCES.values())


def jsonable(value: Any) -> Any:
    """A column value as JSON: times as ISO 8601 with offsets."""
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return value


def row_dict(row: Any, vault: Vault) -> dict[str, Any]:
    """Every column of an ORM row, encrypted ones decrypted (named without their `_enc`); an
    encrypted JSON object or list (a record's details, a screen's answers) is given as such."""
    data: dict[str, Any] = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        if is_encrypted(column):
            name = column.name.removesuffix("_enc")
            try:
                data[name] = _parsed(vault.decrypt(value))
            except ValueError:
                data[name] = "(cannot be decrypted with the configured keys)"
        else:
            data[column.name] = jsonable(value)
    return data


def _parsed(text: str | None) -> Any:
    """Decrypted text, or the JSON object or list it holds."""
    if text and text[:1] in "{[":
        try:
            return json.loads(text)
        except ValueError:
            pass
    return text


# -- calls ---------------------------------------------------------------------------------------


def _calls_expand(session: Session, subject: Subject, keys: str) -> None:
    hashes = {vault.keyed_hash(number) for number in subject.numbers for vault in vaults(keys)}
    if hashes:
        subject.call_ids.update(session.scalars(select(Call.id).where(Call.caller_hash.in_(sorted(hashes)))))
    if subject.call_ids:
        tokens = session.scalars(select(Call.caller_number_enc).where(Call.id.in_(sorted(subject.call_ids)), Call.caller_number_enc.is_not(None)))
        vault = Vault(keys)
        for token in tokens:
            try:
                number = vault.decrypt(token)
            except ValueError:
                continue
            if number:
                subject.numbers.add(number)


def _calls_export(session: Session, subject: Subject, vault: Vault) -> list[dict[str, Any]]:
    exported = []
    for call in session.scalars(select(Call).where(Call.id.in_(sorted(subject.call_ids))).order_by(Call.id)):
        data = row_dict(call, vault)
        data["events"] = [row_dict(event, vault) for event in session.scalars(select(CallEvent).where(CallEvent.call_id == call.id).order_by(CallEvent.id))]
        entry = session.scalar(select(QueueEntry).where(QueueEntry.call_id == call.id))
        data["queue_entry"] = row_dict(entry, vault) if entry is not None else None
        exported.append(data)
    return exported


def _calls_erase(session: Session, subject: Subject) -> int:
    return anonymise_calls(session, subject.call_ids)


register_subject_source(SubjectSource("calls", _calls_expand, _calls_export, _calls_erase))


# -- finding, exporting, erasing ---------------------------------------------------------------------

def find(session: Session, keys: str, numbers: Iterable[str] = (), contact_ids: Iterable[int] = ()) -> Subject:
    """Everything linked to the given numbers or contact ids. Raises ValueError for a malformed number."""
    subject = Subject(numbers={normalise(number) for number in numbers}, contact_ids=set(contact_ids))
    for _ in range(20):  # links form a small graph; this bounds a pathological one
        before = subject.snapshot()
        for source in sources():
            source.expand(session, subject, keys)
        if subject.snapshot() == before:
            break
    return subject


def export(session: Session, keys: str, subject: Subject) -> dict[str, Any]:
    """Everything held about `subject`, decrypted, by source."""
    vault = Vault(keys)
    return {
        "exported_at": utcnow().isoformat(),
        "subject": {"numbers": sorted(subject.numbers), **subject.describe()},
        "records": {source.name: source.export(session, subject, vault) for source in sources()},
    }


def erase(session: Session, subject: Subject) -> dict[str, int]:
    """Remove or anonymise everything held about `subject`; rows touched by source. The caller commits."""
    # Later sources hang off earlier ones (contacts off calls): erase them first.
    return {source.name: source.erase(session, subject) for source in reversed(sources())}
