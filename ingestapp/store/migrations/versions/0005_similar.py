"""Similar pictures (issue 19): the perceptual hash of each item and catalog entry.

``items.phash`` and ``catalog.phash`` hold 16 hex digits (64 bits, ``stages/similar.py``). Rows of
earlier releases have none (NULL): they were not hashed, and never count as similar.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("items", "catalog"):
        op.add_column(table, sa.Column("phash", sa.String(length=16), nullable=True))


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch copy of the table: copying
    # "catalog" would drop the triggers that keep its FTS5 index (catalog_fts, migration 0002).
    for table in ("catalog", "items"):
        op.drop_column(table, "phash")
