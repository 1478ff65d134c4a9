"""Fixtures: an app on a temporary instance dir and media root (pytest-flask's ``client`` uses it),
on SQLite or, for the modules in POSTGRES_MODULES, also on a real PostgreSQL; a real redis-server.

Every Flask test client is an ``AuthClient`` (tests/auth_support.py): it sends the test admin's API
token unless made with ``app.test_client(token=None)``. ``token_client``, ``cookie_client`` (signed
in through /login, sending the CSRF header like the page scripts) and ``anon_client`` say which.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ingestapp import create_app, shutdown
from ingestapp.store import revision as schema
from tests.auth_support import AuthClient, csrf_token, prepare_instance, sign_in
from tests.selection import group_by_shared_fixture, mark_by_what_starts
from tests.services import POSTGRES_BIN, REDIS_SERVER, PostgresServer, RedisServer, postgres_server, redis_server

#: Test modules whose ``app`` runs on both databases (the API, the jobs, the streams and the turns).
POSTGRES_MODULES = {"test_api", "test_jobs", "test_stream", "test_turns"}
TEMPLATE_DATABASE = "ingest_template"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "database_url" in metafunc.fixturenames:
        module = metafunc.module.__name__.rpartition(".")[2]
        both = module in POSTGRES_MODULES and not metafunc.definition.get_closest_marker("sqlite_only")
        databases = ["sqlite", "postgresql"] if both else ["sqlite"]
        metafunc.parametrize("database_url", databases, indirect=True)


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the markers (--dist loadgroup)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that start servers or browsers (``make check`` skips them) and group those that
    share a module's fixture on one pytest-xdist worker (``tests/selection.py``)."""
    for item in items:
        mark_by_what_starts(item)
        group_by_shared_fixture(item)


@pytest.fixture(autouse=True, scope="session")
def _authenticated_test_clients() -> Iterator[None]:
    """``app.test_client()`` is an AuthClient for every app the tests create."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Flask, "test_client_class", AuthClient)
        yield


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """The media root: tests write their own files here."""
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster for the session, with a template database at the current revision."""
    require_system_tool(str(POSTGRES_BIN / "postgres"), "the PostgreSQL tests need a real server")
    with postgres_server() as server:
        server.execute(f"CREATE DATABASE {TEMPLATE_DATABASE}")
        app = create_app({"DATABASE_URL": server.url(TEMPLATE_DATABASE), "INSTANCE_PATH": server.directory / "i"})
        schema.upgrade(app)  # what `flask --app ingestapp db upgrade` does
        app.extensions["ingest_broker"].disconnect()
        app.extensions["ingest_db"].dispose()
        yield server


@pytest.fixture
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the embedded SQLite default) or the URL of a fresh, migrated PostgreSQL database."""
    if getattr(request, "param", "sqlite") == "sqlite":
        yield None
        return
    with fresh_database(request.getfixturevalue("postgres"), "test_") as url:
        yield url


@pytest.fixture
def shared_database(postgres: PostgresServer) -> Iterator[str]:
    """A fresh PostgreSQL database at the current schema, shared by several processes of a test."""
    with fresh_database(postgres, "scale_") as url:
        yield url


@pytest.fixture(scope="module")
def module_database(postgres: PostgresServer) -> Iterator[str]:
    """``shared_database`` for all the tests of a module (those sharing a cluster or a work tier)."""
    with fresh_database(postgres, "module_") as url:
        yield url


@contextmanager
def fresh_database(server: PostgresServer, prefix: str) -> Iterator[str]:
    """The URL of a new database made from the migrated template, dropped on exit."""
    name = prefix + secrets.token_hex(6)
    server.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DATABASE}")
    try:
        yield server.url(name)
    finally:
        server.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
def redis_service() -> Iterator[RedisServer]:
    """A fresh redis-server (per test: a test may stop and restart it)."""
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def module_redis() -> Iterator[RedisServer]:
    """A redis-server for all the tests of a module (one of them may stop and start it)."""
    with running_redis() as server:
        yield server


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    require_system_tool(REDIS_SERVER, "the event-bus and work-tier tests need a real redis-server")
    with redis_server() as server:
        yield server


@pytest.fixture
def app_config(tmp_path: Path, media: Path, database_url: str | None) -> dict:
    """The test app's settings; its database is migrated and already holds the test admin."""
    prepare_instance(tmp_path / "instance", database_url)
    config = {
        "TESTING": True,
        "INSTANCE_PATH": tmp_path / "instance",
        "MEDIA_ROOTS": [media],
        "WORKERS": 2,
        "SSE_KEEPALIVE": 0.5,
    }
    if database_url:
        config["DATABASE_URL"] = database_url
    return config


@pytest.fixture
def app(app_config: dict) -> Iterator[Flask]:
    app = create_app(app_config)
    yield app
    shutdown(app)
    app.extensions["ingest_broker"].disconnect()
    app.extensions["ingest_db"].dispose()


@pytest.fixture
def token_client(app: Flask) -> FlaskClient:
    """Authenticated with the test admin's API token (what ``client`` is too)."""
    return app.test_client()


@pytest.fixture
def anon_client(app: Flask) -> FlaskClient:
    """No credentials at all."""
    return app.test_client(token=None)


@pytest.fixture
def cookie_client(app: Flask) -> FlaskClient:
    """Signed in as the test admin through the /login form; sends X-CSRFToken like static/net.js."""
    client = app.test_client(token=None)
    assert sign_in(client).status_code == 302
    client.environ_base["HTTP_X_CSRFTOKEN"] = csrf_token(client)
    return client


def require_system_tool(path: str, why: str) -> None:
    """Skip with a clear reason when a system tool is missing; fail instead when CI demands it."""
    if os.path.exists(path):
        return
    message = f"{path} is not installed: {why} (apt-get install it, or run .ci/run)"
    if os.environ.get("INGEST_REQUIRE_SYSTEM_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)
