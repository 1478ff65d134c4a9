"""Fixtures: an app on a temporary instance dir and media root (pytest-flask's ``client`` uses it).

Every Flask test client is an ``AuthClient`` (tests/auth_support.py): it sends the test admin's API
token unless made with ``app.test_client(token=None)``. ``token_client``, ``cookie_client`` (signed
in through /login, sending the CSRF header like the page scripts) and ``anon_client`` say which.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from ingestapp import create_app, shutdown
from tests.auth_support import AuthClient, csrf_token, prepare_instance, sign_in


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


@pytest.fixture
def app_config(tmp_path: Path, media: Path) -> dict:
    """The test app's settings; its database already holds the test admin."""
    prepare_instance(tmp_path / "instance")
    return {
        "TESTING": True,
        "INSTANCE_PATH": tmp_path / "instance",
        "MEDIA_ROOTS": [media],
        "WORKERS": 2,
        "SSE_KEEPALIVE": 0.5,
    }


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
    """Signed in as the test admin through the /login form; sends X-CSRFToken like static/common.js."""
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
