"""call-back requests from the public pages: the call's channel, what the request said, and the
per-address marks that rate-limit them

Revision ID: 0011_web
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import helpline.models


revision = '0011_web'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('channel', sa.String(length=16), server_default='phone', nullable=False))
        batch_op.add_column(sa.Column('request_enc', sa.Text(), nullable=True))
    op.create_table('public_submissions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('address_hash', sa.String(length=64), nullable=False),
    sa.Column('at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_public_submissions'))
    )
    with op.batch_alter_table('public_submissions', schema=None) as batch_op:
        batch_op.create_index('ix_public_submissions_address_at', ['address_hash', 'at'], unique=False)
        batch_op.create_index(batch_op.f('ix_public_submissions_at'), ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('public_submissions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_public_submissions_at'))
        batch_op.drop_index('ix_public_submissions_address_at')
    op.drop_table('public_submissions')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('request_enc')
        batch_op.drop_column('channel')
