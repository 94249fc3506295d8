"""attendance at each appointment, and the end of an episode (discharge) from which its record is kept

Revision ID: 0008
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa
import helpline.models


revision = '0008'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('bookings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attendance', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('attendance_at', helpline.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.create_check_constraint('attendance', "attendance IN ('attended', 'did_not_attend')")

    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('discharged_on', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('discharged_at', helpline.models.UTCDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('discharged_by_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_contacts_discharged_on'), ['discharged_on'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_contacts_discharged_by_id_users'), 'users', ['discharged_by_id'], ['id'],
                                    ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_contacts_discharged_by_id_users'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_contacts_discharged_on'))
        batch_op.drop_column('discharged_by_id')
        batch_op.drop_column('discharged_at')
        batch_op.drop_column('discharged_on')

    with op.batch_alter_table('bookings', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_bookings_attendance'), type_='check')
        batch_op.drop_column('attendance_at')
        batch_op.drop_column('attendance')
