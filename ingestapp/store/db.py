"""The SQLAlchemy engine of an app, created once per process by ``init_app`` (read it as
``app.extensions["ingest_db"]``); ``begin``, the one way to open a write transaction; and
``off_hub``, which runs long database work in gevent's threadpool so the hub goes on serving.

Why both: SQLite has one writer at a time, and a writer that finds the lock taken waits in
SQLite's C busy handler, which stalls the gevent hub (every stream, every request) for as long as
the other writer holds the lock. ``begin`` makes writers wait for each other on a gevent lock
instead, which only the waiting greenlet (or thread) feels. Long reads and writes (the catalog
commit, search, replays) then run off the hub with ``off_hub``: SQLite releases the GIL while it
works, and the Python around it gets the GIL back every switch interval (5 ms).
"""

from __future__ import annotations

import contextvars
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import gevent
from flask import Flask
from gevent.lock import Semaphore
from sqlalchemy import Connection, Engine, create_engine, event

T = TypeVar("T")
#: Seconds a writer waits for another's transaction before it gives up (SQLite's own busy timeout).
WRITE_WAIT = 30.0
#: Seconds a writer that leaves the lock with others waiting steps aside (gevent's lock lets the
#: releaser take it again before a waiter woken on another thread runs: a long chunked commit
#: would starve a job's writer).
HANDOFF = 0.002
_writers: weakref.WeakKeyDictionary[Engine, Semaphore] = weakref.WeakKeyDictionary()


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
        # Connections move between the hub and gevent's threadpool (``off_hub``), one at a time.
        return {"connect_args": {"check_same_thread": False, "timeout": WRITE_WAIT}}
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


@contextmanager
def begin(engine: Engine) -> Iterator[Connection]:
    """``engine.begin()``: a connection in a transaction, committed on exit (rolled back on an
    exception). On SQLite one such transaction runs at a time per engine, the others waiting on a
    gevent lock (from the hub or a threadpool thread alike); on PostgreSQL it is ``engine.begin()``.
    Raises TimeoutError after ``WRITE_WAIT`` seconds of waiting. Not re-entrant: a greenlet
    holding one must not open another (SQLite would refuse it too)."""
    if engine.dialect.name != "sqlite":
        with engine.begin() as conn:
            yield conn
        return
    writer = _writers.setdefault(engine, Semaphore())
    if not writer.acquire(timeout=WRITE_WAIT):
        raise TimeoutError(f"the database was locked for {WRITE_WAIT:.0f} s by another writer")
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        writer.release()
        if writer.linkcount():  # others wait: let the first take the lock before this caller can again
            time.sleep(HANDOFF)  # gevent's sleep on the hub; in a threadpool thread, the hub runs meanwhile


def off_hub(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` run in gevent's threadpool, in a copy of the caller's context (Flask's
    app and request contexts are context variables), blocking only the calling greenlet; returns
    its result or raises its exception. For work that would hold the hub for more than a few
    milliseconds: a password hash, a catalog commit, a search, a replay's read."""
    return gevent.get_hub().threadpool.apply(contextvars.copy_context().run, (function, *args))
