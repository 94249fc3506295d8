"""live routing: console connections, handlers' current call, offers' declines and Twilio legs

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import helpline.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_connections',
    sa.Column('sid', sa.String(length=64), nullable=False),
    sa.Column('handler_id', sa.Integer(), nullable=False),
    sa.Column('process', sa.String(length=64), nullable=False),
    sa.Column('connected_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('seen_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['handler_id'], ['handlers.id'], name=op.f('fk_console_connections_handler_id_handlers'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('sid', name=op.f('pk_console_connections'))
    )
    with op.batch_alter_table('console_connections', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_connections_handler_id'), ['handler_id'], unique=False)
        batch_op.create_index('ix_console_connections_process_seen', ['process', 'seen_at'], unique=False)

    with op.batch_alter_table('handlers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('current_call_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_handlers_current_call_id_calls'), 'calls', ['current_call_id'], ['id'], ondelete='SET NULL')

    with op.batch_alter_table('queue_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('declined_by', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('conference_sid', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('handler_leg_sid', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('caller_leg_sid', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_queue_entries_state_need_order', ['state', 'need', 'priority', 'placed_at', 'id'], unique=False)

    # The server defaults only filled existing rows; the models set these values themselves.
    with op.batch_alter_table('queue_entries', schema=None) as batch_op:
        batch_op.alter_column('declined_by', server_default=None)
        batch_op.alter_column('attempts', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('queue_entries', schema=None) as batch_op:
        batch_op.drop_index('ix_queue_entries_state_need_order')
        batch_op.drop_column('caller_leg_sid')
        batch_op.drop_column('handler_leg_sid')
        batch_op.drop_column('conference_sid')
        batch_op.drop_column('attempts')
        batch_op.drop_column('declined_by')

    with op.batch_alter_table('handlers', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_handlers_current_call_id_calls'), type_='foreignkey')
        batch_op.drop_column('current_call_id')

    with op.batch_alter_table('console_connections', schema=None) as batch_op:
        batch_op.drop_index('ix_console_connections_process_seen')
        batch_op.drop_index(batch_op.f('ix_console_connections_handler_id'))

    op.drop_table('console_connections')
