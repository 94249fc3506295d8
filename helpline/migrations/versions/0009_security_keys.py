"""security keys (WebAuthn credentials) as a second factor beside TOTP

Revision ID: 0009
Revises: 0007
"""
from alembic import op
import sqlalchemy as sa
import helpline.models


revision = '0009'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('security_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('credential_id', sa.String(length=1400), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('sign_count', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('created_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', helpline.models.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_security_keys_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_security_keys')),
    sa.UniqueConstraint('credential_id', name=op.f('uq_security_keys_credential_id'))
    )
    op.create_index(op.f('ix_security_keys_user_id'), 'security_keys', ['user_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_security_keys_user_id'), table_name='security_keys')
    op.drop_table('security_keys')
