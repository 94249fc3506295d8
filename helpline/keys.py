"""Key rotation: re-encrypt every encrypted field under the newest key, while the service keeps running.

Which columns are encrypted is read from the models, so every area's columns are covered without a
list to keep up to date:

- a column is encrypted when its name ends in `_enc` (the project's convention), or when it says so
  with `info={"encrypted": True}` (and `info={"encrypted": False}` opts a `_enc` column out);
- `info={"keyed_hash_of": "caller_number_enc"}` marks a keyed hash of an encrypted column of the same
  row: it is recomputed from the decrypted value under the new key;
- `info={"keyed_hash": True}` marks a keyed hash whose value is not in its own row (a contact's copy
  of the caller's number hash): it is translated old hash -> new hash, using the values of every
  `keyed_hash_of` column.

The procedure (README): restart the service with HELPLINE_ENCRYPTION_KEY="new,old" (the first key
encrypts, both decrypt), run `helpline rotate-key`, then drop the old key. The rotation works in short
transactions of `batch_size` rows and writes a row only if it has not changed since it was read, so it
never overwrites the service's own writes and never holds a lock for long. Rows already under the new
key are left alone, so it can be stopped and run again at any time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import Column, MetaData, Table, and_, select, update

from .config import Settings
from .crypto import Vault
from .db import Database
from .instance import demo_secret
from .models import Base


def resolve_keys(settings: Settings) -> str:
    """The configured encryption key(s), exactly as `create_app` resolves them."""
    return settings.encryption_key or demo_secret(settings.instance_path, "encryption.key", Vault.generate_key)


def split_keys(keys: str) -> list[str]:
    """The keys of `HELPLINE_ENCRYPTION_KEY`, newest first."""
    return [part.strip() for part in keys.split(",") if part.strip()]


def vaults(keys: str) -> list[Vault]:
    """One Vault per configured key, newest first: for keyed hashes made under an older key."""
    return [Vault(key) for key in split_keys(keys)]


def is_encrypted(column: Column) -> bool:  # type: ignore[type-arg]
    """Whether `column` holds a Fernet token (see the module docstring for the convention)."""
    marker = column.info.get("encrypted")
    return bool(marker) if marker is not None else column.name.endswith("_enc")


@dataclass(frozen=True)
class TablePlan:
    """What rotation does to one table."""

    table: Table
    encrypted: tuple[Column, ...]  # type: ignore[type-arg]
    #: (hash column, the encrypted column whose plaintext it hashes)
    same_row_hashes: tuple[tuple[Column, Column], ...]  # type: ignore[type-arg]
    translated_hashes: tuple[Column, ...]  # type: ignore[type-arg]

    @property
    def key(self) -> Column:  # type: ignore[type-arg]
        """The single-column primary key rotation pages by."""
        return next(iter(self.table.primary_key.columns))


def plan(metadata: MetaData = Base.metadata) -> list[TablePlan]:
    """Every table with encrypted fields or keyed hashes, read from the models' columns."""
    plans = []
    for table in metadata.sorted_tables:
        encrypted = tuple(column for column in table.columns if is_encrypted(column))
        same_row = []
        translated = []
        for column in table.columns:
            source = column.info.get("keyed_hash_of")
            if source:
                if source not in table.columns or not is_encrypted(table.columns[source]):
                    raise ValueError(f"{table.name}.{column.name}: keyed_hash_of names {source!r}, not an encrypted column of the table")
                same_row.append((column, table.columns[source]))
            elif column.info.get("keyed_hash"):
                translated.append(column)
        if encrypted or translated:
            if len(table.primary_key.columns) != 1:
                raise ValueError(f"{table.name}: key rotation pages by a single-column primary key")
            plans.append(TablePlan(table, encrypted, tuple(same_row), tuple(translated)))
    return plans


@dataclass
class RotationReport:
    """What a rotation did."""

    rows_examined: int = 0
    rows_rewritten: int = 0
    fields_reencrypted: int = 0
    hashes_recomputed: int = 0
    hashes_translated: int = 0
    #: keyed hashes whose number is no longer held anywhere (purged or erased): left as they are.
    hashes_unmatched: int = 0
    #: rows that changed under us between read and write; the service wrote them under the new key.
    rows_skipped_changed: int = 0
    #: (table, primary key, column) of fields no configured key opens.
    unreadable: list[tuple[str, object, str]] = field(default_factory=list)


class _Keys:
    """The configured keys, and the newest on its own."""

    def __init__(self, keys: str):
        parts = split_keys(keys)
        self.vault = Vault(keys)
        self.newest = Fernet(parts[0].encode())
        self.newest_vault = Vault(parts[0])
        self.all_vaults = [Vault(part) for part in parts]

    def under_newest(self, token: str) -> bool:
        try:
            self.newest.decrypt(token.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            return False
        return True


def _pages(database: Database, table: Table, columns: list[Column], batch_size: int) -> Iterable[list]:  # type: ignore[type-arg]
    key = next(iter(table.primary_key.columns))
    after = None
    while True:
        query = select(key, *columns).order_by(key).limit(batch_size)
        if after is not None:
            query = query.where(key > after)
        with database.transaction() as session:
            rows = session.execute(query).all()
        if not rows:
            return
        yield rows
        after = rows[-1][0]


def _compare_and_set(database: Database, table: Table, key_value: object, old: dict[str, object], new: dict[str, object]) -> bool:
    """Write `new` only if the row still holds `old`; False when the service changed it meanwhile."""
    key = next(iter(table.primary_key.columns))
    conditions = [key == key_value] + [table.columns[name].is_not_distinct_from(value) for name, value in old.items()]
    with database.transaction() as session:
        result = session.execute(update(table).where(and_(*conditions)).values(**new))
    return result.rowcount == 1


def rotate(
    database: Database,
    keys: str,
    batch_size: int = 200,
    progress: Callable[[str, int], None] | None = None,
    metadata: MetaData = Base.metadata,
) -> RotationReport:
    """Re-encrypt every encrypted field under the first of `keys` and bring keyed hashes along.

    `progress(table, rows_so_far)` is called after each batch (the CLI prints it).
    """
    material = _Keys(keys)
    report = RotationReport()
    plans = plan(metadata)
    # old keyed hash (under any configured key) -> the hash under the newest key, for every number held.
    translation: dict[str, str] = {}

    for table_plan in plans:
        if not table_plan.encrypted:
            continue
        table = table_plan.table
        hash_columns = [hash_column for hash_column, _ in table_plan.same_row_hashes]
        columns = list(table_plan.encrypted) + hash_columns
        done = 0
        for rows in _pages(database, table, columns, batch_size):
            for row in rows:
                report.rows_examined += 1
                key_value, values = row[0], dict(zip([column.name for column in columns], row[1:]))
                old: dict[str, object] = {}
                new: dict[str, object] = {}
                plaintexts: dict[str, str | None] = {}
                for column in table_plan.encrypted:
                    token = values[column.name]
                    if token is None:
                        plaintexts[column.name] = None
                        continue
                    try:
                        plaintexts[column.name] = material.vault.decrypt(token)
                    except ValueError:
                        report.unreadable.append((table.name, key_value, column.name))
                        plaintexts[column.name] = None
                        continue
                    if not material.under_newest(token):
                        old[column.name] = token
                        new[column.name] = material.vault.rotate(token)
                        report.fields_reencrypted += 1
                for hash_column, source in table_plan.same_row_hashes:
                    plaintext = plaintexts.get(source.name)
                    if plaintext is None:
                        continue
                    fresh = material.newest_vault.keyed_hash(plaintext)
                    for vault in material.all_vaults:
                        translation[vault.keyed_hash(plaintext)] = fresh
                    if values[hash_column.name] != fresh:
                        old[hash_column.name] = values[hash_column.name]
                        new[hash_column.name] = fresh
                        report.hashes_recomputed += 1
                if new:
                    if _compare_and_set(database, table, key_value, old, new):
                        report.rows_rewritten += 1
                    else:
                        report.rows_skipped_changed += 1
            done += len(rows)
            if progress is not None:
                progress(table.name, done)

    fresh_values = set(translation.values())
    for table_plan in plans:
        table = table_plan.table
        for column in table_plan.translated_hashes:
            done = 0
            for rows in _pages(database, table, [column], batch_size):
                for key_value, value in rows:
                    if value is None or value in fresh_values:
                        continue
                    target = translation.get(value)
                    if target is None:
                        report.hashes_unmatched += 1
                        continue
                    if _compare_and_set(database, table, key_value, {column.name: value}, {column.name: target}):
                        report.hashes_translated += 1
                    else:
                        report.rows_skipped_changed += 1
                done += len(rows)
                if progress is not None:
                    progress(f"{table.name}.{column.name}", done)
    return report


def unreadable_with_newest(database: Database, keys: str, metadata: MetaData = Base.metadata) -> list[tuple[str, object, str]]:
    """Fields the newest key alone cannot open: empty once a rotation is complete and the old key can go."""
    material = _Keys(keys)
    left = []
    for table_plan in plan(metadata):
        if not table_plan.encrypted:
            continue
        columns = list(table_plan.encrypted)
        for rows in _pages(database, table_plan.table, columns, 500):
            for row in rows:
                for column, token in zip(columns, row[1:]):
                    if token is not None and not material.under_newest(token):
                        left.append((table_plan.table.name, row[0], column.name))
    return left
