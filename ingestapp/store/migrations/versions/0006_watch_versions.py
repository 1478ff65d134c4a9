"""Watch folders (issue 20): an item is one version of a path.

- ``items.version``: 1 for a path's first item in a session; a watching session that sees the file
  change ingests it again as version 2, 3, ... (the earlier items stay). The unique constraint
  moves from ``(session_id, path_bytes)`` to ``(session_id, path_bytes, version)``.
- ``items.size``, ``items.mtime_ns``: the file's size (bytes) and modification time (ns) as stat
  gave them before its stages ran (watching sessions only; NULL elsewhere), so a reconciliation
  scan finds what changed without reading any file.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}


def upgrade() -> None:
    old_unique = _unique_name("items", ["session_id", "path_bytes"]) or "uq_items_session_id_path_bytes"
    with op.batch_alter_table("items", naming_convention=SQLITE_NAMES) as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("mtime_ns", sa.BigInteger(), nullable=True))
        batch.drop_constraint(old_unique, type_="unique")
        batch.create_unique_constraint(
            "items_session_id_path_bytes_version_key", ["session_id", "path_bytes", "version"]
        )


def downgrade() -> None:
    op.execute("DELETE FROM items WHERE version > 1")  # the older schema holds one item per path
    columns = ["session_id", "path_bytes", "version"]
    new_unique = _unique_name("items", columns) or "uq_items_session_id_path_bytes_version"
    with op.batch_alter_table("items", naming_convention=SQLITE_NAMES) as batch:
        batch.drop_constraint(new_unique, type_="unique")
        batch.create_unique_constraint("items_session_id_path_bytes_key", ["session_id", "path_bytes"])
        batch.drop_column("mtime_ns")
        batch.drop_column("size")
        batch.drop_column("version")


def _unique_name(table: str, columns: list[str]) -> str | None:
    """The name of ``table``'s UNIQUE constraint on ``columns`` (None when unnamed: SQLite)."""
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints(table):
        if constraint["column_names"] == columns:
            return constraint["name"]
    return None
