"""the language a queued call asks for, in a column routing's SQL can seek on

Revision ID: 0012
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa


def language_asked(flags: list[object] | None) -> str | None:
    """The language a call's `language:<code>` flag asks for (the last, if several), as the service
    read it when this revision was written (kept here, so the revision never changes with the code)."""
    language = None
    for flag in flags or ():
        if isinstance(flag, str) and flag.startswith("language:"):
            language = flag.split(":", 1)[1]
    return language


revision = '0012'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('queue_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('language', sa.Text(), nullable=True))
        batch_op.create_index('ix_queue_entries_state_need_language_order',
                              ['state', 'need', 'language', 'priority', 'placed_at', 'id'], unique=False)
    # The entries already written: only those whose flags name a language change (None asks for none).
    entries = sa.table('queue_entries', sa.column('id', sa.Integer()), sa.column('flags', sa.JSON()),
                       sa.column('language', sa.Text()))
    connection = op.get_bind()
    rows = connection.execute(sa.select(entries.c.id, entries.c.flags)
                              .where(sa.cast(entries.c.flags, sa.Text()).like('%language:%'))).all()
    for entry_id, flags in rows:
        connection.execute(sa.update(entries).where(entries.c.id == entry_id).values(language=language_asked(flags)))


def downgrade() -> None:
    with op.batch_alter_table('queue_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_queue_entries_state_need_language_order')
        batch_op.drop_column('language')
