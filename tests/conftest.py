"""Fixtures: an app on a temporary instance dir and media root (pytest-flask's ``client`` uses it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from ingestapp import create_app, shutdown


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """The media root: tests write their own files here."""
    root = tmp_path / "media"
    root.mkdir()
    return root


@pytest.fixture
def app_config(tmp_path: Path, media: Path) -> dict:
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


def require_system_tool(path: str, why: str) -> None:
    """Skip with a clear reason when a system tool is missing; fail instead when CI demands it."""
    if os.path.exists(path):
        return
    message = f"{path} is not installed: {why} (apt-get install it, or run .ci/run)"
    if os.environ.get("INGEST_REQUIRE_SYSTEM_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)
