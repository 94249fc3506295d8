"""display-only screens' tokens (the wallboard on a wall)

Revision ID: 0011_display
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import helpline.models


revision = '0011_display'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('display_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', helpline.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', helpline.models.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_display_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_display_tokens_token_hash'))
    )


def downgrade() -> None:
    op.drop_table('display_tokens')
