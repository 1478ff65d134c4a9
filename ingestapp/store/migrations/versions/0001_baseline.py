"""Baseline: the schema of the first release (ingest_sessions, items, errors, events, catalog).

The first release made its tables with ``create_all`` and recorded no revision. Upgrading such a
database adopts it as it is: its tables are this revision's, so only ``alembic_version`` is added.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("ingest_sessions"):
        return  # made by the first release's create_all: adopt it in place
    op.create_table(
        "ingest_sessions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_event_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=128), nullable=True),
        sa.Column("committed_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ingest_sessions_created_at", "ingest_sessions", ["created_at"])
    op.create_index("ix_ingest_sessions_status", "ingest_sessions", ["status"])
    op.create_table(
        "errors",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("file", sa.Text(), nullable=False),
        sa.Column("stage", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("time", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["ingest_sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_errors_session_id", "errors", ["session_id"])
    op.create_table(
        "events",
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["ingest_sessions.id"]),
        sa.PrimaryKeyConstraint("session_id", "seq"),
    )
    op.create_table(
        "items",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("session_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("root", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["session_id"], ["ingest_sessions.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("session_id", "path"),
    )
    op.create_index("ix_items_session_id", "items", ["session_id"])
    op.create_index("ix_items_sha256", "items", ["sha256"])
    op.create_table(
        "catalog",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("item_id", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.Column("nsfw", sa.Boolean(), nullable=True),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("committed_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("sha256"),
    )
    op.create_index("ix_catalog_nsfw", "catalog", ["nsfw"])
    op.create_index("ix_catalog_rating", "catalog", ["rating"])
    op.create_table(
        "catalog_keywords",
        sa.Column("entry_id", sa.String(length=32), nullable=False),
        sa.Column("keyword", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["entry_id"], ["catalog.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("entry_id", "keyword"),
    )
    op.create_index("ix_catalog_keywords_keyword", "catalog_keywords", ["keyword"])


def downgrade() -> None:
    for table in ("catalog_keywords", "catalog", "items", "events", "errors", "ingest_sessions"):
        op.drop_table(table)
