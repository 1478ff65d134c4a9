"""The SQLAlchemy engine of an app, created once per process by ``init_app`` (read it as
``app.extensions["ingest_db"]``)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from sqlalchemy import create_engine, event


def init_app(app: Flask) -> None:
    """Create the engine for ``app.config["DATABASE_URL"]`` as ``app.extensions["ingest_db"]``; the
    tables come from the migrations (``store/migrations``, checked by ``store/revision.py``)."""
    url = app.config["DATABASE_URL"]
    engine = create_engine(url, **_engine_options(url))
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    app.extensions["ingest_db"] = engine


def _engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        # All access happens on the gevent hub thread; the pool only needs to allow greenlets.
        return {"connect_args": {"check_same_thread": False, "timeout": 30}}
    # PostgreSQL (psycopg 3): under gevent's monkey-patching psycopg waits with select(), which
    # gevent makes cooperative (psycopg.waiting picks wait_select when it sees select patched).
    return {"pool_pre_ping": True}


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (status, replay) run while the job's batch writer commits;
    # synchronous=NORMAL is durable across application crashes in WAL mode (sqlite.org/wal.html).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
