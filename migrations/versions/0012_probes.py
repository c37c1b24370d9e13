"""probes: locations, per-location results and history, probe tokens

Locations (named per tenant, created with their first ``probe`` token), the probes'
live bookkeeping, each monitor's latest result per location and the per-location
check history (with the probes' idempotency keys); ``locations`` and ``quorum`` on
monitors (existing monitors: ``["local"]`` and 1, i.e. as before); ``location_id`` on
API tokens.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = '0012'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('locations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_location_tenant_name')
    )
    with op.batch_alter_table('locations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_locations_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('location_checks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('monitor_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('location', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('ts', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.ForeignKeyConstraint(['monitor_id'], ['monitors.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'location', 'key', name='uq_location_check_key')
    )
    with op.batch_alter_table('location_checks', schema=None) as batch_op:
        batch_op.create_index('ix_location_checks_monitor_ts', ['monitor_id', 'location', 'ts'], unique=False)
        batch_op.create_index('ix_location_checks_ts', ['ts'], unique=False)

    op.create_table('location_results',
    sa.Column('monitor_id', sa.Integer(), nullable=False),
    sa.Column('location', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('checked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
    sa.Column('received_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['monitor_id'], ['monitors.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('monitor_id', 'location')
    )
    with op.batch_alter_table('location_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_location_results_tenant_id'), ['tenant_id'], unique=False)

    op.create_table('probes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('location_id', sa.Integer(), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=False),
    sa.Column('version', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('instance', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('connected', sa.Boolean(), nullable=False),
    sa.Column('connected_since', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('disconnected_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_seen_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_report_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('buffered', sa.Integer(), nullable=False),
    sa.Column('lag_ms', sa.Float(), nullable=True),
    sa.Column('results_total', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['location_id'], ['locations.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_id')
    )
    with op.batch_alter_table('probes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_probes_location_id'), ['location_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_probes_tenant_id'), ['tenant_id'], unique=False)

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('location_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_api_tokens_location_id', 'locations', ['location_id'], ['id'], ondelete='CASCADE')

    with op.batch_alter_table('monitors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('locations', sa.JSON(), nullable=False, server_default='["local"]'))
        batch_op.add_column(sa.Column('quorum', sa.Integer(), nullable=False, server_default='1'))



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('monitors', schema=None) as batch_op:
        batch_op.drop_column('quorum')
        batch_op.drop_column('locations')

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_constraint('fk_api_tokens_location_id', type_='foreignkey')
        batch_op.drop_column('location_id')

    with op.batch_alter_table('probes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_probes_tenant_id'))
        batch_op.drop_index(batch_op.f('ix_probes_location_id'))

    op.drop_table('probes')
    with op.batch_alter_table('location_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_location_results_tenant_id'))

    op.drop_table('location_results')
    with op.batch_alter_table('location_checks', schema=None) as batch_op:
        batch_op.drop_index('ix_location_checks_ts')
        batch_op.drop_index('ix_location_checks_monitor_ts')

    op.drop_table('location_checks')
    with op.batch_alter_table('locations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_locations_tenant_id'))

    op.drop_table('locations')
