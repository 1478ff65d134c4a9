"""The database schema's revision: Alembic migrations (``migrations/``, run by Flask-Migrate) and
the check the app makes at start.

``flask --app ingestapp db upgrade`` brings any database to the current revision: an empty one is
created, one made by the first release (tables from ``create_all``, no ``alembic_version``) is
adopted in place by the baseline migration, an older one is migrated. The app itself only creates
an *empty SQLite* database (the embedded default, one worker); any other database that is not at
the current revision is refused with that command in the message, since several workers or hosts
must not race to migrate a shared database.
"""

from __future__ import annotations

from pathlib import Path

import flask_migrate
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask
from sqlalchemy import Engine, inspect

MIGRATIONS = Path(__file__).with_name("migrations")
UPGRADE_COMMAND = "flask --app ingestapp db upgrade"


class SchemaOutOfDate(RuntimeError):
    """The database is not at the revision this release needs; the message says what to run."""


def init_app(app: Flask) -> None:
    """Register the ``flask db`` commands (Flask-Migrate) on this package's migrations."""
    flask_migrate.Migrate(directory=str(MIGRATIONS)).init_app(app)


def head_revision() -> str:
    """The revision this release's models need."""
    config = Config(str(MIGRATIONS / "alembic.ini"))
    config.set_main_option("script_location", str(MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    assert head is not None, "no migrations"
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision (``alembic_version``); None when it has none."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(app: Flask) -> None:
    """Migrate the app's database to the current revision (what ``flask db upgrade`` does)."""
    with app.app_context():
        flask_migrate.upgrade(directory=str(MIGRATIONS))


def prepare(app: Flask) -> str | None:
    """Create an empty SQLite database, then check the revision: None when it is current, else
    a message saying what is wrong and what to run."""
    engine: Engine = app.extensions["ingest_db"]
    tables = set(inspect(engine).get_table_names())
    if not tables and engine.dialect.name == "sqlite":
        upgrade(app)
        return None
    current, head = current_revision(engine), head_revision()
    if current == head:
        return None
    if not tables:
        found = "the database is empty"
    elif current is None:
        found = "the database was made by the first release (no schema revision)"
    else:
        found = f"the database schema is at revision {current}"
    return f"{found}; this release needs revision {head}: run `{UPGRADE_COMMAND}`"


def require_current(app: Flask) -> None:
    """Raise SchemaOutOfDate unless ``prepare`` found the schema current (servers and the CLI
    call this before doing anything)."""
    problem = app.extensions.get("ingest_schema_problem")
    if problem:
        raise SchemaOutOfDate(problem)
