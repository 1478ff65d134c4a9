"""PostgreSQL as the shared store: psycopg 3 under gevent, and the schema migrations (Alembic)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, insert, inspect, select

from ingestapp import create_app
from ingestapp.models import Base, IngestSession
from ingestapp.schema import UPGRADE_COMMAND, current_revision, head_revision
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


def test_a_first_release_database_is_refused_then_upgraded_in_place(empty_database: str, tmp_path: Path) -> None:
    engine = create_engine(empty_database)
    Base.metadata.create_all(engine)  # what the first release did at start
    with engine.begin() as conn:
        conn.execute(insert(IngestSession).values(
            id="kept", status="completed", parameters={}, state={"last_event_id": 3}, created_at=1.0, last_event_id=3,
        ))
    config = {"DATABASE_URL": empty_database, "INSTANCE_PATH": tmp_path / "instance"}
    app = create_app(config)
    problem = app.extensions["ingest_schema_problem"]
    assert "first release" in problem and UPGRADE_COMMAND in problem
    assert app.test_client().get("/api/ingest/sessions").status_code == 503
    app.extensions["ingest_db"].dispose()

    env = {**os.environ, "DATABASE_URL": empty_database, "INGEST_INSTANCE_PATH": str(tmp_path / "instance")}
    upgrade = subprocess.run(
        [str(FLASK), "--app", "ingestapp", "db", "upgrade"], cwd=REPO, env=env, capture_output=True, text=True,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    assert current_revision(engine) == head_revision()
    with engine.connect() as conn:
        assert conn.scalar(select(IngestSession.last_event_id).where(IngestSession.id == "kept")) == 3
    engine.dispose()
    app = create_app(config)
    assert app.extensions["ingest_schema_problem"] is None
    assert app.test_client().get("/api/ingest/status/kept").get_json() == {"last_event_id": 3, "status": "completed"}
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
    Base.metadata.create_all(create_engine(f"sqlite:///{instance / 'ingestapp.sqlite3'}"))
    env = {**os.environ, "INGEST_INSTANCE_PATH": str(instance), "INGEST_MEDIA_ROOTS": str(media),
           "INGEST_BIND": f"127.0.0.1:{free_port()}"}
    result = subprocess.run(
        [str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert UPGRADE_COMMAND in result.stderr + result.stdout
