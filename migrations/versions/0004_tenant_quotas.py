"""tenant quotas: per-tenant overrides of QUOTA_MONITORS, QUOTA_CHANNELS, QUOTA_API_TOKENS

NULL follows the setting, so existing tenants keep the defaults (app/quotas.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0004'
down_revision: Union[str, Sequence[str], None] = '0003'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_COLUMNS = ('quota_monitors', 'quota_channels', 'quota_api_tokens')


def upgrade() -> None:
    """Upgrade schema."""
    # batch mode: SQLite cannot drop columns in place (downgrade), so both directions use it.
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        for name in _COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('tenants', schema=None) as batch_op:
        for name in reversed(_COLUMNS):
            batch_op.drop_column(name)
