"""PostgreSQL as the shared store: psycopg 3 under gevent, and the schema migrations (Alembic, on
PostgreSQL and SQLite)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, insert, inspect, select
from sqlalchemy.exc import IntegrityError

from ingestapp import create_app, shutdown
from ingestapp.stages.base import new_item_fields
from ingestapp.store.models import CatalogEntry, IngestSession, Item
from ingestapp.store.revision import MIGRATIONS, UPGRADE_COMMAND, current_revision, head_revision
from tests.conftest import TEMPLATE_DATABASE
from tests.servers import GUNICORN, REPO, free_port
from tests.services import PostgresServer

FLASK = Path(sys.executable).with_name("flask")

# Run in a fresh interpreter monkey-patched like a gunicorn gevent worker (patch, then import).
HUB_PROBE = """
from gevent import monkey; monkey.patch_all()
import sys, time, gevent
from sqlalchemy import text
from ingestapp import create_app
import psycopg.waiting
app = create_app({"DATABASE_URL": sys.argv[1], "INSTANCE_PATH": sys.argv[2]})
engine = app.extensions["ingest_db"]
lags = []
def ticker():
    while True:
        before = time.perf_counter(); gevent.sleep(0.01); lags.append(time.perf_counter() - before - 0.01)
def slow_query():
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_sleep(1)"))
tick = gevent.spawn(ticker)
started = time.perf_counter()
gevent.joinall([gevent.spawn(slow_query), gevent.spawn(slow_query)], raise_error=True)
took = time.perf_counter() - started
tick.kill()
print(psycopg.waiting.wait.__name__, len(lags), round(max(lags), 4), round(took, 2))
"""


@pytest.mark.serial  # a timing bound (hub gaps under 0.1 s): other tests' load would be measured
def test_a_slow_query_does_not_block_the_gevent_hub(postgres: PostgresServer, tmp_path: Path) -> None:
    """Two concurrent ``pg_sleep(1)`` take about 1 s together and the hub keeps ticking."""
    result = subprocess.run(
        [sys.executable, "-c", HUB_PROBE, postgres.url(TEMPLATE_DATABASE), str(tmp_path / "instance")],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    wait_function, ticks, max_lag, took = result.stdout.split()
    assert wait_function != "wait_c", wait_function  # psycopg saw gevent patch select (it uses poll())
    assert int(ticks) > 50, result.stdout  # ~100 ticks of 10 ms in one second
    assert float(max_lag) < 0.1, result.stdout
    assert float(took) < 1.8, result.stdout  # concurrent, not one after the other


@pytest.fixture
def empty_database(postgres: PostgresServer) -> str:
    name = "empty_" + os.urandom(4).hex()
    postgres.execute(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    postgres.execute(f"DROP DATABASE {name} WITH (FORCE)")


def first_release_schema(url: str) -> None:
    """The tables the first release made with ``create_all`` and no ``alembic_version``: the
    baseline migration's own operations (it was generated from that release's models)."""
    spec = importlib.util.spec_from_file_location("baseline", MIGRATIONS / "versions" / "0001_baseline.py")
    baseline = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(baseline)
    engine = create_engine(url)
    with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        baseline.upgrade()
    engine.dispose()


def first_release_rows(url: str) -> None:
    """Rows as the first release wrote them: a finished session with items and a catalog entry, and
    one running when its server stopped (owned by "host:pid")."""
    fields = new_item_fields() | {"mime_type": "image/jpeg", "keywords": ["Harbour", "boats"], "rating": 4,
                                  "score": 0.8, "sha256": "a" * 64}
    fields["metadata"] |= {"make": "Canon", "model": "EOS R5", "datetime_original": "2021-06-01T10:00:00",
                           "gps": {"latitude": 1.0, "longitude": 2.0}}
    meta = sa.MetaData()
    sessions = sa.Table("ingest_sessions", meta, autoload_with=(engine := create_engine(url)))
    items = sa.Table("items", meta, autoload_with=engine)
    catalog = sa.Table("catalog", meta, autoload_with=engine)
    keywords = sa.Table("catalog_keywords", meta, autoload_with=engine)
    state = {"last_event_id": 3, "status": "completed"}
    with engine.begin() as conn:
        conn.execute(sessions.insert(), [
            {"id": "kept", "status": "completed", "parameters": {}, "state": state, "created_at": 1.0,
             "last_event_id": 3, "owner": None, "committed_at": 2.0},
            {"id": "running", "status": "processing", "parameters": {}, "state": RUNNING_STATE, "created_at": 1.5,
             "last_event_id": 7, "owner": "oldhost:4242", "committed_at": None},
        ])
        conn.execute(items.insert(), [
            {"id": "item1", "session_id": "kept", "seq": 1, "root": "/media", "path": "2021/café.jpg",
             "status": "ok", "sha256": "a" * 64, "fields": fields, "errors": []},
            {"id": "item2", "session_id": "kept", "seq": 2, "root": "/media", "path": "2021/b.jpg",
             "status": "error", "sha256": None, "fields": new_item_fields(), "errors": [{"stage": "identify",
                                                                                       "message": "x"}]},
        ])
        conn.execute(catalog.insert().values(id="entry1", sha256="a" * 64, item_id="item1", path="2021/café.jpg",
                                             rating=4, nsfw=False, fields=fields, committed_at=2.0))
        conn.execute(keywords.insert(), [{"entry_id": "entry1", "keyword": k} for k in fields["keywords"]])
    engine.dispose()


RUNNING_STATE = {
    "session_id": "running", "status": "processing", "message": None, "parameters": {}, "errors": [],
    "progress_percent": 50.0, "total_files": 2, "processed_files": 1, "current_file": "x.jpg", "stages": {},
    "stats": {"errors": 0}, "worker_pool": {"active": 1, "max": 2, "queue_depth": 0}, "timing": {},
    "last_event_id": 7,
}


@pytest.fixture(params=["sqlite", "postgresql"])
def first_release_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A first-release database, with data, on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'first-release.sqlite3'}"
    else:
        url = request.getfixturevalue("empty_database")
    first_release_schema(url)
    first_release_rows(url)
    return url


def test_a_first_release_database_is_refused_then_upgraded_in_place(first_release_url: str, tmp_path: Path) -> None:
    config = {"DATABASE_URL": first_release_url, "INSTANCE_PATH": tmp_path / "instance"}
    app = create_app(config)
    problem = app.extensions["ingest_schema_problem"]
    assert "first release" in problem and UPGRADE_COMMAND in problem
    assert app.test_client(token=None).get("/api/ingest/sessions").status_code == 503
    shutdown(app)
    app.extensions["ingest_db"].dispose()

    env = {**os.environ, "DATABASE_URL": first_release_url, "INGEST_INSTANCE_PATH": str(tmp_path / "instance")}
    upgrade = subprocess.run(
        [str(FLASK), "--app", "ingestapp", "db", "upgrade"], cwd=REPO, env=env, capture_output=True, text=True,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    check = subprocess.run(
        [str(FLASK), "--app", "ingestapp", "db", "check"], cwd=REPO, env=env, capture_output=True, text=True,
    )
    assert check.returncode == 0 and "No new upgrade operations detected" in check.stdout, check.stdout + check.stderr
    engine = create_engine(first_release_url)
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.scalar(select(IngestSession.last_event_id).where(IngestSession.id == "kept")) == 3
        assert dict(conn.execute(select(Item.id, Item.path_bytes)).all()) == {
            "item1": "2021/café.jpg".encode(), "item2": b"2021/b.jpg"}
        entry = conn.execute(select(CatalogEntry)).one()
    assert (entry.root, entry.path_bytes, entry.score, entry.taken_at, entry.has_gps, entry.media_type) == (
        "/media", "2021/café.jpg".encode(), 0.8, "2021-06-01T10:00:00", True, "image")
    assert entry.search_text == "2021/café.jpg harbour boats canon eos r5"
    with pytest.raises(IntegrityError), engine.begin() as conn:  # the unique key is now the bytes
        conn.execute(insert(Item).values(id="item3", session_id="kept", seq=3, root="/media", path="other",
                                         path_bytes="2021/café.jpg".encode(), status="ok", fields={}, errors=[]))
    engine.dispose()

    app = create_app(config)  # its reaper takes the session the first release left running
    try:
        assert app.extensions["ingest_schema_problem"] is None
        client = app.test_client()  # the test admin, added now that the users table exists
        assert client.get("/api/ingest/status/kept").get_json() == {"last_event_id": 3, "status": "completed"}
        running = client.get("/api/ingest/status/running").get_json()
        assert (running["status"], running["last_event_id"]) == ("interrupted", 8)
        found = client.get("/api/catalog?q=harbo").get_json()  # the search index holds the old entry
        assert [item["path"] for item in found["items"]] == ["2021/café.jpg"]
        assert client.get("/api/catalog?q=zzz").get_json()["total"] == 0
    finally:
        shutdown(app)
        app.extensions["ingest_broker"].disconnect()
        app.extensions["ingest_db"].dispose()


def test_an_empty_postgresql_database_is_migrated_by_the_command_not_the_app(
    empty_database: str, tmp_path: Path
) -> None:
    app = create_app({"DATABASE_URL": empty_database, "INSTANCE_PATH": tmp_path / "instance"})
    assert "the database is empty" in app.extensions["ingest_schema_problem"]
    assert inspect(app.extensions["ingest_db"]).get_table_names() == []  # several workers must not race
    app.extensions["ingest_db"].dispose()


@pytest.mark.server
def test_gunicorn_refuses_to_start_on_an_out_of_date_database(tmp_path: Path, media: Path) -> None:
    instance = tmp_path / "instance"
    instance.mkdir()
    first_release_schema(f"sqlite:///{instance / 'ingestapp.sqlite3'}")
    env = {**os.environ, "INGEST_INSTANCE_PATH": str(instance), "INGEST_MEDIA_ROOTS": str(media),
           "INGEST_BIND": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert UPGRADE_COMMAND in result.stderr + result.stdout
