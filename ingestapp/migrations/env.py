"""Alembic environment: the app's own engine (``db.py``) and the models' metadata (``models.py``).

Runs inside the Flask app context Flask-Migrate (or ``schema.upgrade``) provides. Online only: an
offline SQL script would not know which database it targets. SQLite runs in batch mode, since it
cannot ALTER most things in place.
"""

from alembic import context
from flask import current_app

from ingestapp.models import Base

engine = current_app.extensions["ingest_db"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
