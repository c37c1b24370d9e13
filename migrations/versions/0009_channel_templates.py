"""channel templates, quiet hours, PagerDuty: per-channel message templates and
notification schedule, the incident a delivery belongs to (PagerDuty dedup key,
acknowledge), the tenant's timezone for rendered times

Revision ID: 0009
Revises: 0005
Create Date: 2026-12-05

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.add_column(sa.Column('template', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('quiet_hours', sa.JSON(), nullable=True))
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('incident_id', sa.Integer(), nullable=True))
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.add_column(sa.Column('timezone', sa.String(length=64), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        batch_op.drop_column('timezone')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('incident_id')
    with op.batch_alter_table('channels', schema=None) as batch_op:
        batch_op.drop_column('quiet_hours')
        batch_op.drop_column('template')
