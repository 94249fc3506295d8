"""scored questionnaires (PHQ-9, GAD-7, AUDIT-C) run with a caller

Revision ID: 0010
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa
import helpline.models


revision = '0010'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('questionnaires',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by_id', sa.Integer(), nullable=True),
    sa.Column('recorded_by_role', sa.String(length=16), nullable=False),
    sa.Column('risk_raised', sa.Boolean(), nullable=False),
    sa.Column('result_enc', sa.Text(), nullable=False),
    sa.CheckConstraint("kind IN ('phq9', 'gad7', 'auditc')", name=op.f('ck_questionnaires_kind')),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_questionnaires_call_id_calls'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_questionnaires_contact_id_contacts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], name=op.f('fk_questionnaires_recorded_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_questionnaires'))
    )
    with op.batch_alter_table('questionnaires', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_questionnaires_call_id'), ['call_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_questionnaires_contact_id'), ['contact_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('questionnaires', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_questionnaires_contact_id'))
        batch_op.drop_index(batch_op.f('ix_questionnaires_call_id'))
    op.drop_table('questionnaires')
