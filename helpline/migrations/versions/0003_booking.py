"""booking: localities, sites, clinicians and their availability, first contacts, risk screens, bookings,
and APScheduler's job store (a branch beside 0002; `upgrade heads` applies both)

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-24 02:39:30.299967
"""
from alembic import op
import sqlalchemy as sa
import helpline.models


revision = '0003'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('apscheduler_jobs',
    sa.Column('id', sa.Unicode(length=191), nullable=False),
    sa.Column('next_run_time', sa.Float(precision=25), nullable=True),
    sa.Column('job_state', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_apscheduler_jobs'))
    )
    with op.batch_alter_table('apscheduler_jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_apscheduler_jobs_next_run_time'), ['next_run_time'], unique=False)

    op.create_table('localities',
    sa.Column('code', sa.String(length=8), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('region', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('code', name=op.f('pk_localities'))
    )
    op.create_table('clinicians',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('display_name', sa.String(length=120), nullable=False),
    sa.Column('profession', sa.String(length=32), nullable=False),
    sa.Column('locality_code', sa.String(length=8), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.CheckConstraint("profession IN ('psychiatrist', 'psychologist', 'addiction_specialist', 'therapist')", name=op.f('ck_clinicians_profession')),
    sa.ForeignKeyConstraint(['locality_code'], ['localities.code'], name=op.f('fk_clinicians_locality_code_localities')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_clinicians_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clinicians')),
    sa.UniqueConstraint('code', name=op.f('uq_clinicians_code')),
    sa.UniqueConstraint('user_id', name=op.f('uq_clinicians_user_id'))
    )
    with op.batch_alter_table('clinicians', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_clinicians_locality_code'), ['locality_code'], unique=False)
        batch_op.create_index(batch_op.f('ix_clinicians_profession'), ['profession'], unique=False)

    op.create_table('contacts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('person_hash', sa.String(length=64), nullable=True),
    sa.Column('recorded_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('about_self', sa.Boolean(), nullable=True),
    sa.Column('disposition', sa.String(length=16), nullable=False),
    sa.Column('details_enc', sa.Text(), nullable=True),
    sa.CheckConstraint("disposition IN ('in_progress', 'third_party', 'booked')", name=op.f('ck_contacts_disposition')),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_contacts_call_id_calls'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['recorded_by_id'], ['users.id'], name=op.f('fk_contacts_recorded_by_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts')),
    sa.UniqueConstraint('call_id', name=op.f('uq_contacts_call_id'))
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contacts_person_hash'), ['person_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_contacts_recorded_by_id'), ['recorded_by_id'], unique=False)

    op.create_table('risk_screens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('handler_user_id', sa.Integer(), nullable=True),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('answers_enc', sa.Text(), nullable=False),
    sa.CheckConstraint("level IN ('none', 'low', 'moderate', 'immediate')", name=op.f('ck_risk_screens_level')),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_risk_screens_call_id_calls'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['handler_user_id'], ['users.id'], name=op.f('fk_risk_screens_handler_user_id_users'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_risk_screens'))
    )
    with op.batch_alter_table('risk_screens', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_risk_screens_call_id'), ['call_id'], unique=False)

    op.create_table('sites',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('locality_code', sa.String(length=8), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('address', sa.JSON(), nullable=False),
    sa.Column('town', sa.String(length=80), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['locality_code'], ['localities.code'], name=op.f('fk_sites_locality_code_localities')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sites')),
    sa.UniqueConstraint('code', name=op.f('uq_sites_code'))
    )
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_sites_locality_code'), ['locality_code'], unique=False)

    op.create_table('availability_exceptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clinician_id', sa.Integer(), nullable=True),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('starts_on', sa.Date(), nullable=False),
    sa.Column('ends_on', sa.Date(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.CheckConstraint("kind IN ('leave', 'closure', 'training')", name=op.f('ck_availability_exceptions_kind')),
    sa.CheckConstraint('(clinician_id IS NULL) <> (site_id IS NULL)', name=op.f('ck_availability_exceptions_one_subject')),
    sa.CheckConstraint('starts_on <= ends_on', name=op.f('ck_availability_exceptions_dates')),
    sa.ForeignKeyConstraint(['clinician_id'], ['clinicians.id'], name=op.f('fk_availability_exceptions_clinician_id_clinicians'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_availability_exceptions_site_id_sites'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_availability_exceptions'))
    )
    with op.batch_alter_table('availability_exceptions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_availability_exceptions_clinician_id'), ['clinician_id'], unique=False)
        batch_op.create_index('ix_availability_exceptions_dates', ['starts_on', 'ends_on'], unique=False)
        batch_op.create_index(batch_op.f('ix_availability_exceptions_site_id'), ['site_id'], unique=False)

    op.create_table('availability_rules',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('clinician_id', sa.Integer(), nullable=False),
    sa.Column('weekday', sa.Integer(), nullable=False),
    sa.Column('start_minute', sa.Integer(), nullable=False),
    sa.Column('end_minute', sa.Integer(), nullable=False),
    sa.Column('slot_minutes', sa.Integer(), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('valid_from', sa.Date(), nullable=True),
    sa.Column('valid_until', sa.Date(), nullable=True),
    sa.CheckConstraint("(modality = 'video' AND site_id IS NULL) OR (modality = 'face_to_face' AND site_id IS NOT NULL)", name=op.f('ck_availability_rules_site_matches_modality')),
    sa.CheckConstraint("modality IN ('face_to_face', 'video')", name=op.f('ck_availability_rules_modality')),
    sa.CheckConstraint('slot_minutes BETWEEN 10 AND 240', name=op.f('ck_availability_rules_slot_minutes')),
    sa.CheckConstraint('start_minute >= 0 AND end_minute <= 1440 AND start_minute < end_minute', name=op.f('ck_availability_rules_hours')),
    sa.CheckConstraint('weekday BETWEEN 0 AND 6', name=op.f('ck_availability_rules_weekday')),
    sa.ForeignKeyConstraint(['clinician_id'], ['clinicians.id'], name=op.f('fk_availability_rules_clinician_id_clinicians'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_availability_rules_site_id_sites'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_availability_rules'))
    )
    with op.batch_alter_table('availability_rules', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_availability_rules_clinician_id'), ['clinician_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_availability_rules_site_id'), ['site_id'], unique=False)
        batch_op.create_index('ix_availability_rules_weekday_modality', ['weekday', 'modality'], unique=False)

    op.create_table('bookings',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('clinician_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('starts_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ends_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('held_start', helpline.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('booked_by_id', sa.Integer(), nullable=True),
    sa.Column('created_at', helpline.models.UTCDateTime(timezone=True), nullable=False),
    sa.Column('cancelled_at', helpline.models.UTCDateTime(timezone=True), nullable=True),
    sa.Column('confirmation', sa.String(length=16), nullable=True),
    sa.Column('reminder_at', helpline.models.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("modality IN ('face_to_face', 'video')", name=op.f('ck_bookings_modality')),
    sa.CheckConstraint("status IN ('booked', 'cancelled')", name=op.f('ck_bookings_status')),
    sa.CheckConstraint('starts_at < ends_at', name=op.f('ck_bookings_times')),
    sa.ForeignKeyConstraint(['booked_by_id'], ['users.id'], name=op.f('fk_bookings_booked_by_id_users'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], name=op.f('fk_bookings_call_id_calls'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['clinician_id'], ['clinicians.id'], name=op.f('fk_bookings_clinician_id_clinicians')),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_bookings_contact_id_contacts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], name=op.f('fk_bookings_site_id_sites')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_bookings')),
    sa.UniqueConstraint('clinician_id', 'held_start', name='uq_bookings_clinician_id_held_start')
    )
    with op.batch_alter_table('bookings', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_bookings_call_id'), ['call_id'], unique=False)
        batch_op.create_index('ix_bookings_clinician_starts', ['clinician_id', 'starts_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_bookings_contact_id'), ['contact_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('bookings', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_bookings_contact_id'))
        batch_op.drop_index('ix_bookings_clinician_starts')
        batch_op.drop_index(batch_op.f('ix_bookings_call_id'))

    op.drop_table('bookings')
    with op.batch_alter_table('availability_rules', schema=None) as batch_op:
        batch_op.drop_index('ix_availability_rules_weekday_modality')
        batch_op.drop_index(batch_op.f('ix_availability_rules_site_id'))
        batch_op.drop_index(batch_op.f('ix_availability_rules_clinician_id'))

    op.drop_table('availability_rules')
    with op.batch_alter_table('availability_exceptions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_availability_exceptions_site_id'))
        batch_op.drop_index('ix_availability_exceptions_dates')
        batch_op.drop_index(batch_op.f('ix_availability_exceptions_clinician_id'))

    op.drop_table('availability_exceptions')
    with op.batch_alter_table('sites', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sites_locality_code'))

    op.drop_table('sites')
    with op.batch_alter_table('risk_screens', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_risk_screens_call_id'))

    op.drop_table('risk_screens')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contacts_recorded_by_id'))
        batch_op.drop_index(batch_op.f('ix_contacts_person_hash'))

    op.drop_table('contacts')
    with op.batch_alter_table('clinicians', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_clinicians_profession'))
        batch_op.drop_index(batch_op.f('ix_clinicians_locality_code'))

    op.drop_table('clinicians')
    op.drop_table('localities')
    with op.batch_alter_table('apscheduler_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_apscheduler_jobs_next_run_time'))

    op.drop_table('apscheduler_jobs')
