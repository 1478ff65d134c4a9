"""Fair shares and revocation of streams (issue 16, points 7 and 10), against a real gunicorn: a
user's streams past INGEST_MAX_STREAMS_PER_USER are a 429, and revoking a token or deleting a user
ends that credential's open streams within a keepalive interval, while others' go on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from ingestapp.accounts.users import create_token, delete_user, revoke_token
from ingestapp.core.config import load_config
from tests.auth_support import add_user
from tests.factories import write_jpegs
from tests.servers import Server, SSEClient, gunicorn

ENV = {"INGEST_MAX_STREAMS_PER_USER": "3", "INGEST_SSE_KEEPALIVE": "1", "INGEST_FILE_DELAY": "3600"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str, Path]]:
    """A server whose one session stays running (each file waits an hour) and so streams forever."""
    base = tmp_path_factory.mktemp("principals")
    write_jpegs(base / "media", 2)
    with gunicorn(base / "instance", base / "media", ENV) as running:
        status, started = running.request("POST", "/api/ingest/process", {"directory": str(base / "media")})
        assert status == 202
        yield running, started["session_id"], base / "instance"


def engine_of(instance: Path):
    return create_engine(load_config({"INSTANCE_PATH": instance})["DATABASE_URL"])


def token_of(instance: Path, username: str) -> tuple[int, str]:
    engine = engine_of(instance)
    try:
        add_user(engine, username, is_admin=True)
        return create_token(engine, username, "principals test")
    finally:
        engine.dispose()


def open_stream(server: Server, session_id: str, token: str) -> SSEClient:
    return SSEClient(server.port, f"/api/ingest/stream/{session_id}", {"Authorization": f"Bearer {token}"}, timeout=10)


def ends_within(client: SSEClient, seconds: float) -> bool:
    """Read frames until the server ends the response; False if it is still open after ``seconds``."""
    started = time.monotonic()
    try:
        for _ in client.frames():
            if time.monotonic() - started > seconds:
                return False
    except TimeoutError:
        return False
    return True


@pytest.mark.server
def test_a_user_holds_at_most_its_share_of_streams(server: tuple[Server, str, Path]) -> None:
    running, session_id, instance = server
    _, token = token_of(instance, "greedy")
    held = [open_stream(running, session_id, token) for _ in range(3)]
    try:
        assert [client.status for client in held] == [200, 200, 200]
        refused = open_stream(running, session_id, token)
        assert refused.status == 429
        body = refused.file.read(int(refused.headers["content-length"]))
        assert b'"error"' in body and b'"field"' in body
        refused.close()
        other = open_stream(running, session_id, running.token or "")  # another user is not affected
        assert other.status == 200
        other.close()
        held.pop().close()
        time.sleep(0.3)  # the server notices the closed stream
        again = open_stream(running, session_id, token)
        assert again.status == 200
        held.append(again)
    finally:
        for client in held:
            client.close()


@pytest.mark.server
def test_a_revoked_token_and_a_deleted_user_end_their_streams(server: tuple[Server, str, Path]) -> None:
    running, session_id, instance = server
    token_id, token = token_of(instance, "revoked")
    _, doomed_token = token_of(instance, "doomed")
    revoked, doomed = open_stream(running, session_id, token), open_stream(running, session_id, doomed_token)
    survivor = open_stream(running, session_id, running.token or "")
    try:
        assert (revoked.status, doomed.status, survivor.status) == (200, 200, 200)
        engine = engine_of(instance)
        try:
            revoke_token(engine, token_id)
            delete_user(engine, "doomed")
        finally:
            engine.dispose()
        assert ends_within(revoked, 4)  # a keepalive interval (1 s) and the check's pass
        assert ends_within(doomed, 4)
        assert not ends_within(survivor, 2.5)  # the admin's stream goes on
    finally:
        for client in (revoked, doomed, survivor):
            client.close()
