"""Leases, byte-exact names, accounts, review and catalog search (issues 7, 8 and 11).

- ``ingest_sessions``: the ``owner`` ("host:pid") check gives way to a lease (``lease_owner``,
  ``lease_expires_at``) and ``cancel_requested``; a running session of the old release has no lease,
  so the reaper marks it ``interrupted`` at the first start, as the old startup recovery did.
  Adds ``user_id`` (sessions from before accounts have none), ``commit_result`` and
  ``review_changed_at``.
- ``items``: ``path_bytes``, the exact bytes of the name (the old release stored only names that
  were valid UTF-8, so the UTF-8 of ``path`` is exact); uniqueness moves from ``(session_id,
  path)`` to ``(session_id, path_bytes)``; ``excluded``.
- ``catalog``: ``root``, ``path_bytes`` (from the item), and ``score``, ``taken_at``, ``has_gps``,
  ``media_type``, ``search_text`` filled from each entry's ``fields`` as the commit fills them.
- ``users`` and ``api_tokens``.
- Catalog search: on SQLite an external-content FTS5 table over ``catalog.search_text`` with the
  trigram tokenizer (SQLite >= 3.34; sqlite.org/fts5.html §4.3.5) kept in sync by triggers (§4.4.3);
  on PostgreSQL a GIN index on the 'simple' text-search vector. ``migrations/env.py`` leaves these
  out of autogenerate's comparison (the models cannot declare them).

A database that already has these tables (made by ``create_all`` of a development build that had
these models before it had migrations) is adopted as it is, as 0001 adopts the first release's.

SQLite runs this in batch mode (a table is copied to change a constraint), with foreign keys off
(``env.py``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: SQLite's name for the reflected unnamed UNIQUE(session_id, path) of ``items``, so batch mode can drop it.
SQLITE_NAMES = {"uq": "uq_%(table_name)s_%(column_0_N_name)s"}
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE catalog_fts USING fts5("
    "search_text, content='catalog', content_rowid='rowid', tokenize='trigram')",
    "CREATE TRIGGER catalog_fts_insert AFTER INSERT ON catalog BEGIN "
    "INSERT INTO catalog_fts(rowid, search_text) VALUES (new.rowid, new.search_text); END",
    "CREATE TRIGGER catalog_fts_delete AFTER DELETE ON catalog BEGIN "
    "INSERT INTO catalog_fts(catalog_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); END",
    "CREATE TRIGGER catalog_fts_update AFTER UPDATE OF search_text ON catalog BEGIN "
    "INSERT INTO catalog_fts(catalog_fts, rowid, search_text) VALUES ('delete', old.rowid, old.search_text); "
    "INSERT INTO catalog_fts(rowid, search_text) VALUES (new.rowid, new.search_text); END",
    "INSERT INTO catalog_fts(catalog_fts) VALUES ('rebuild')",  # index the rows already there
)
POSTGRESQL_FTS = ("CREATE INDEX ix_catalog_search ON catalog USING gin (to_tsvector('simple', search_text))",)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if sa.inspect(op.get_bind()).has_table("users"):
        return  # made by ``create_all`` of a build with these models but no migrations yet: adopt it
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_admin", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username"),
    )
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])

    with op.batch_alter_table("ingest_sessions") as batch:
        batch.drop_column("owner")
        batch.add_column(sa.Column("lease_owner", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("commit_result", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("review_changed_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("user_id", sa.Integer(), nullable=True))
        batch.create_index("ix_ingest_sessions_lease_expires_at", ["lease_expires_at"])
        batch.create_index("ix_ingest_sessions_user_id", ["user_id"])
        batch.create_foreign_key("fk_ingest_sessions_user_id_users", "users", ["user_id"], ["id"], ondelete="SET NULL")

    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("path_bytes", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("excluded", sa.Boolean(), nullable=False, server_default=sa.false()))
    utf8 = "CAST(path AS BLOB)" if dialect == "sqlite" else "convert_to(path, 'UTF8')"
    op.execute(f"UPDATE items SET path_bytes = {utf8}")
    old_unique = _unique_name("items", ["session_id", "path"]) or "uq_items_session_id_path"
    with op.batch_alter_table("items", naming_convention=SQLITE_NAMES) as batch:
        batch.alter_column("path_bytes", existing_type=sa.LargeBinary(), nullable=False)
        batch.drop_constraint(old_unique, type_="unique")
        batch.create_unique_constraint("items_session_id_path_bytes_key", ["session_id", "path_bytes"])

    with op.batch_alter_table("catalog") as batch:
        batch.add_column(sa.Column("root", sa.Text(), nullable=True))
        batch.add_column(sa.Column("path_bytes", sa.LargeBinary(), nullable=True))
        batch.add_column(sa.Column("score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("taken_at", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("has_gps", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("media_type", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("search_text", sa.Text(), nullable=False, server_default=""))
        batch.create_index("ix_catalog_committed_at", ["committed_at"])
        batch.create_index("ix_catalog_score", ["score"])
        batch.create_index("ix_catalog_taken_at", ["taken_at"])
    _fill_catalog()
    for statement in SQLITE_FTS if dialect == "sqlite" else POSTGRESQL_FTS:
        op.execute(statement)


def _unique_name(table: str, columns: list[str]) -> str | None:
    """The name of ``table``'s UNIQUE constraint on ``columns`` (None when unnamed: SQLite)."""
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints(table):
        if constraint["column_names"] == columns:
            return constraint["name"]
    return None


def _fill_catalog() -> None:
    """The new catalog columns of the existing entries, as ``catalog._fill_entry`` sets them at a
    commit (a copy of its rules as of this revision: a migration must not change with the code)."""
    bind = op.get_bind()
    catalog = sa.table(
        "catalog", sa.column("id", sa.String), sa.column("item_id", sa.String), sa.column("path", sa.Text),
        sa.column("fields", sa.JSON), sa.column("root", sa.Text), sa.column("path_bytes", sa.LargeBinary),
        sa.column("score", sa.Float), sa.column("taken_at", sa.String), sa.column("has_gps", sa.Boolean),
        sa.column("media_type", sa.String), sa.column("search_text", sa.Text),
    )
    items = sa.table("items", sa.column("id", sa.String), sa.column("root", sa.Text),
                     sa.column("path_bytes", sa.LargeBinary))
    rows = bind.execute(
        sa.select(catalog.c.id, catalog.c.path, catalog.c.fields, items.c.root, items.c.path_bytes)
        .select_from(catalog.outerjoin(items, items.c.id == catalog.c.item_id))
    ).all()
    for row in rows:
        fields = row.fields or {}
        metadata = fields.get("metadata") or {}
        mime_type = fields.get("mime_type")
        if mime_type:
            media_type = "video" if mime_type.startswith("video/") else "image"
        else:
            media_type = "video" if row.path.lower().endswith(VIDEO_EXTENSIONS) else "image"
        parts = (row.path, *fields.get("keywords", ()), metadata.get("make"), metadata.get("model"),
                 metadata.get("lens_model"))
        bind.execute(
            catalog.update().where(catalog.c.id == row.id).values(
                root=row.root,
                path_bytes=row.path_bytes if row.path_bytes is not None else row.path.encode(),
                score=fields.get("score"),
                taken_at=metadata.get("datetime_original"),
                has_gps=bool(metadata.get("gps")),
                media_type=media_type,
                search_text=" ".join(str(part) for part in parts if part).lower(),
            )
        )


def downgrade() -> None:
    raise NotImplementedError("0002 is not reversible: byte-exact names and accounts have no place in 0001")
