"""monitor kind options: the fields of the dns, postgres, redis, websocket and ping kinds

One JSON column instead of a column per field: each kind validates its own
options (app/monitoring/kinds), and rows of other kinds keep an empty object.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-05

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('monitors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('options', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('monitors', schema=None) as batch_op:
        batch_op.drop_column('options')
