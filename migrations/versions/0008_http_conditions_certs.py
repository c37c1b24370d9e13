"""http requests, conditions, certificate alerts and degraded: new monitor columns

Merging note: written next to other 0006+ revisions on other branches; whichever
lands later chains after the others (every column is nullable, no data moves).

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-05

"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "0007"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_COLUMNS = (
    ("max_redirects", sa.Integer()),
    ("headers", sa.JSON()),
    ("body", sqlmodel.sql.sqltypes.AutoString(length=65536)),
    ("auth", sa.JSON()),
    ("conditions", sa.JSON()),
    ("degraded_latency_ms", sa.Float()),
    ("cert_alert_days", sa.JSON()),
    ("cert_issuer", sqlmodel.sql.sqltypes.AutoString(length=300)),
    ("cert_alerted", sa.Integer()),
)


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table("monitors", schema=None) as batch_op:
        for name, type_ in _COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table("monitors", schema=None) as batch_op:
        for name, _type in reversed(_COLUMNS):
            batch_op.drop_column(name)
