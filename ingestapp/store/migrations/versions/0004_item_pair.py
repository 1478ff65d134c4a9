"""RAW+JPEG pairs (issue 17): ``items.pair_id``, the id of the other item of the pair.

Items of earlier releases have none (NULL): pairs were not recognised then.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("pair_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("pair_id")
