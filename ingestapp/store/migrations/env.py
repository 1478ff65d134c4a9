"""Alembic environment: the app's own engine (``db.py``) and the models' metadata (``models.py``).

Runs inside the Flask app context Flask-Migrate (or ``schema.upgrade``) provides. Online only: an
offline SQL script would not know which database it targets. SQLite runs in batch mode, since it
cannot ALTER most things in place, with foreign keys off while tables are copied (the Alembic
documentation's advice for batch mode; checked again before the commit).
"""

from typing import Any

from alembic import context
from flask import current_app
from sqlalchemy import text

from ingestapp.store.models import Base

engine = current_app.extensions["ingest_db"]
sqlite = engine.dialect.name == "sqlite"
#: Made by hand-written DDL in migration 0002 (catalog search), which the models cannot declare:
#: the SQLite FTS5 table (and the shadow tables FTS5 makes for it) and PostgreSQL's GIN index.
SEARCH_OBJECTS = ("catalog_fts", "ix_catalog_search")


def include_name(name: str | None, type_: str, _parents: dict[str, Any]) -> bool:
    """Leave the catalog-search objects out of autogenerate's comparison (``flask db check``)."""
    return not (name and name.startswith(SEARCH_OBJECTS))


with engine.connect() as connection:
    if sqlite:  # outside a transaction (pysqlite begins one at the first write), else it is ignored
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=sqlite,
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite and connection.execute(text("PRAGMA foreign_key_check")).first() is not None:
            raise RuntimeError("the migration left rows whose foreign keys point nowhere")
    if sqlite:
        connection.commit()
        connection.exec_driver_sql("PRAGMA foreign_keys=ON")
