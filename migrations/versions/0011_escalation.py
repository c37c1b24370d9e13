"""escalation: policies, per-incident escalation schedules, monitor dependencies

Escalation policies (per monitor or tenant default), the durable schedule of
each incident's alerts (claimed by every instance with FOR UPDATE SKIP LOCKED),
``depends_on`` / ``covers_members`` on monitors, and ``parent_id`` / ``notified``
on incidents (dependents' incidents attached to their parent's outage).

Merging note: written next to other revisions after 0005 on other branches;
whichever lands later chains after the others.

Revision ID: 0011
Revises: 0005
Create Date: 2026-12-05

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('escalation_policies',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('repeat_every', sa.Float(), nullable=True),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_escalation_policy_tenant_name')
    )
    with op.batch_alter_table('escalation_policies', schema=None) as batch_op:
        batch_op.create_index('ix_escalation_policies_tenant_id', ['tenant_id', 'id'], unique=False)

    op.create_table('incident_escalations',
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.Column('tenant_id', sa.Integer(), nullable=False),
    sa.Column('monitor_id', sa.Integer(), nullable=False),
    sa.Column('policy_id', sa.Integer(), nullable=True),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('repeat_every', sa.Float(), nullable=True),
    sa.Column('held', sa.Boolean(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('due_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('notified', sa.JSON(), nullable=False),
    sa.Column('stopped_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('stop_reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['incident_id'], ['incidents.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('incident_id')
    )
    with op.batch_alter_table('incident_escalations', schema=None) as batch_op:
        batch_op.create_index('ix_incident_escalations_due', ['stopped_at', 'due_at'], unique=False)

    with op.batch_alter_table('monitors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('covers_members', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('depends_on', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('escalation_policy', sa.Integer(), nullable=True))

    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('notified', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.create_index('ix_incidents_parent_id', ['parent_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('incidents', schema=None) as batch_op:
        batch_op.drop_index('ix_incidents_parent_id')
        batch_op.drop_column('notified')
        batch_op.drop_column('parent_id')
    with op.batch_alter_table('monitors', schema=None) as batch_op:
        batch_op.drop_column('escalation_policy')
        batch_op.drop_column('depends_on')
        batch_op.drop_column('covers_members')
    with op.batch_alter_table('incident_escalations', schema=None) as batch_op:
        batch_op.drop_index('ix_incident_escalations_due')
    op.drop_table('incident_escalations')
    with op.batch_alter_table('escalation_policies', schema=None) as batch_op:
        batch_op.drop_index('ix_escalation_policies_tenant_id')
    op.drop_table('escalation_policies')
