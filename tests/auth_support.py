"""Accounts for tests: the test admin, tokens, and a Flask test client that is authenticated by default.

Every ``app.test_client()`` in the suite is an ``AuthClient`` (conftest.py sets it on Flask), so
tests written before accounts existed run as the admin with an API token. ``token=None`` gives an
anonymous client; ``token="..."`` another user's.
"""

from __future__ import annotations

import atexit
import functools
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, create_engine, inspect, select

from ingestapp import create_app, shutdown
from ingestapp.accounts.users import PASSWORD_HASHER, create_token
from ingestapp.core.config import load_config
from ingestapp.store.models import User

ADMIN = "admin"
PASSWORD = "correct horse battery staple"
#: Hashed once per test run: argon2 takes ~0.15 s, too slow to repeat for every test's app.
PASSWORD_HASH = PASSWORD_HASHER.hash(PASSWORD)


def add_user(engine: Engine, username: str = ADMIN, is_admin: bool = True) -> int:
    """The id of ``username`` (password ``PASSWORD``), created if missing."""
    with engine.begin() as conn:
        user_id = conn.scalar(select(User.id).where(User.username == username))
        if user_id is None:
            user_id = conn.execute(
                User.__table__.insert().values(
                    username=username, password_hash=PASSWORD_HASH, is_admin=is_admin, created_at=time.time()
                )
            ).inserted_primary_key[0]
    return user_id


def new_token(engine: Engine, username: str = ADMIN, is_admin: bool = True, **options: Any) -> str:
    """A fresh API token of ``username`` (created if missing)."""
    add_user(engine, username, is_admin)
    return create_token(engine, username, "tests", **options)[1]


def prepare_instance(instance: Path, database_url: str | None = None) -> str:
    """Migrate an instance's database (as ``load_config`` finds it from ``instance`` and the
    environment) and add the test admin; returns a new admin token. A new SQLite database is a copy
    of one migrated once per test run (``flask db upgrade`` takes a while); any other database must
    be migrated already (conftest's PostgreSQL template is)."""
    url = database_url or load_config({"INSTANCE_PATH": instance})["DATABASE_URL"]
    engine = create_engine(url)
    try:
        if engine.dialect.name == "sqlite" and not inspect(engine).get_table_names():
            engine.dispose()
            shutil.copyfile(_migrated_sqlite(), engine.url.database)
        return new_token(engine)
    finally:
        engine.dispose()


@functools.cache
def _migrated_sqlite() -> Path:
    """An SQLite database at the current revision, made by the migrations (once per test run)."""
    directory = Path(tempfile.mkdtemp(prefix="ingest-schema-"))
    atexit.register(shutil.rmtree, directory, True)
    app = create_app({"INSTANCE_PATH": directory, "DATABASE_URL": f"sqlite:///{directory / 'migrated.sqlite3'}"})
    shutdown(app)  # create_app migrated the empty SQLite database (schema.prepare)
    app.extensions["ingest_broker"].disconnect()
    engine = app.extensions["ingest_db"]
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")  # everything in the one file
    engine.dispose()
    return directory / "migrated.sqlite3"


def admin_token(app: Flask) -> str:
    """The test admin's token in ``app``'s database (one per app)."""
    if "test_admin_token" not in app.extensions:
        app.extensions["test_admin_token"] = new_token(app.extensions["ingest_db"])
    return app.extensions["test_admin_token"]


class AuthClient(FlaskClient):
    """A test client sending ``Authorization: Bearer <token>``: the test admin's unless ``token``
    says otherwise (``None``: anonymous)."""

    def __init__(self, *args: Any, token: Any = ..., **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if token is ...:
            token = admin_token(self.application)
        if token:
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"


def csrf_token(client: FlaskClient) -> str:
    """The CSRF token of the client's session, read from a page's ``<meta name="csrf-token">``."""
    page = client.get("/login", follow_redirects=True).get_data(as_text=True)
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)


def sign_in(client: FlaskClient, username: str = ADMIN, password: str = PASSWORD) -> Any:
    """Sign ``client`` in through the /login form (a session cookie); returns the response."""
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": csrf_token(client)}
    )
