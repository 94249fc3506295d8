"""the scheduler's lease and claimed job runs (no job runs twice with several processes)

Revision ID: 0005
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import helpline.models


revision = '0005'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scheduler_leases',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('acquired_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_scheduler_leases'))
    )
    op.create_table('job_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.String(length=191), nullable=False),
    sa.Column('run_time', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('holder', sa.String(length=128), nullable=False),
    sa.Column('started_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', helpline.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('result', sa.String(length=16), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_job_runs')),
    sa.UniqueConstraint('job_id', 'run_time', name='uq_job_runs_job_id_run_time')
    )
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.create_index('ix_job_runs_started_at', ['started_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('job_runs', schema=None) as batch_op:
        batch_op.drop_index('ix_job_runs_started_at')
    op.drop_table('job_runs')
    op.drop_table('scheduler_leases')
