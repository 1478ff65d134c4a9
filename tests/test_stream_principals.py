"""Fair shares and revocation of streams (issue 16, points 7 and 10), against a real gunicorn: a
user's streams past INGEST_MAX_STREAMS_PER_USER are a 429, a user's sessions past
INGEST_MAX_ACTIVE_SESSIONS_PER_USER wait for their turn, and revoking a token, deleting a user or
signing a browser out ends that credential's open streams within a keepalive interval, while
others' go on (signing out also at once, in-process)."""

from __future__ import annotations

import http.client
import re
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from flask_login import current_user
from sqlalchemy import create_engine

from ingestapp import create_app, shutdown
from ingestapp.accounts.signins import record_sign_out
from ingestapp.accounts.users import Principal, create_token, delete_user, revoke_token
from ingestapp.core.config import load_config
from ingestapp.core.vocabulary import ACTIVE_STATUSES, SessionStatus
from ingestapp.events.broker import Subscription
from ingestapp.web.stream_principals import StreamPrincipals
from tests.auth_support import add_user, csrf_token, sign_in
from tests.factories import write_jpegs
from tests.servers import Server, SSEClient, gunicorn

ENV = {"INGEST_MAX_STREAMS_PER_USER": "3", "INGEST_SSE_KEEPALIVE": "1", "INGEST_FILE_DELAY": "3600",
       "INGEST_MAX_ACTIVE_SESSIONS_PER_USER": "1"}


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


def signed_in_principal(client: FlaskClient) -> Principal:
    """Sign ``client`` in through the form; the Principal its requests carry (its sign-in)."""
    assert sign_in(client).status_code == 302
    with client:  # keeps the request context: current_user is this request's
        client.get("/api/ingest/sessions")
        return current_user.principal()


def test_signing_out_ends_that_sign_ins_streams_here_at_once_and_elsewhere_at_the_check(app_config: dict) -> None:
    """Issue 16, point 10, in-process: ``POST /logout`` ends the streams of that sign-in in the
    worker that handled it at once (the keepalive here is an hour: no check runs), and a sign-out
    recorded by another worker ends them at this worker's next check; other credentials' stay."""
    app = create_app({**app_config, "SSE_KEEPALIVE": 3600})
    try:
        principals: StreamPrincipals = app.extensions["ingest_stream_principals"]
        leaving, elsewhere = app.test_client(token=None), app.test_client(token=None)
        streams = {name: Subscription("session", 10) for name in ("leaving", "elsewhere", "token")}
        leaving_principal = signed_in_principal(leaving)
        principals.admit(leaving_principal, streams["leaving"])
        elsewhere_principal = signed_in_principal(elsewhere)
        principals.admit(elsewhere_principal, streams["elsewhere"])
        with app.test_client() as token_client:  # the test admin's API token: the same user
            token_client.get("/api/ingest/sessions")
            principals.admit(current_user.principal(), streams["token"])

        assert leaving.post("/logout", data={"csrf_token": csrf_token(leaving)}).status_code == 302
        assert [name for name, stream in streams.items() if stream.closed] == ["leaving"]
        principals.release(leaving_principal, streams["leaving"])  # as its response's close does

        assert elsewhere_principal.sign_in is not None
        record_sign_out(app.extensions["ingest_db"], elsewhere_principal.sign_in.id, app.config["SIGN_IN_MAX_AGE"])
        assert principals.check() == 1  # what every worker's checker runs each keepalive
        assert [name for name, stream in streams.items() if stream.closed] == ["leaving", "elsewhere"]
    finally:
        shutdown(app)


class Browser:
    """One browser's cookie jar against a real server: pages and forms over plain HTTP/1.1."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.cookie = ""

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str]:
        """One request with this browser's cookie, keeping the one it sets; ``(status, body)``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=30)
        headers = {"Cookie": self.cookie} if self.cookie else {}
        if form is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        try:
            conn.request(method, path, body=urlencode(form) if form is not None else None, headers=headers)
            response = conn.getresponse()
            body = response.read().decode()
            if response.getheader("Set-Cookie"):
                self.cookie = response.getheader("Set-Cookie").split(";", 1)[0]
            return response.status, body
        finally:
            conn.close()

    def submit(self, page: str, action: str, **fields: str) -> int:
        """Send the form of ``action`` as the page at ``page`` would, with its CSRF token."""
        _, html = self.request("GET", page)
        token = re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)
        return self.request("POST", action, {**fields, "csrf_token": token})[0]

    def stream(self, session_id: str) -> SSEClient:
        return SSEClient(self.server.port, f"/api/ingest/stream/{session_id}", {"Cookie": self.cookie},
                         timeout=10, anonymous=True)


@pytest.mark.server
def test_signing_out_ends_that_browsers_streams_and_not_the_users_others(server: tuple[Server, str, Path]) -> None:
    """Issue 16, point 10, with a real gunicorn: two browsers of one user, each with an open
    stream; one signs out: its stream ends within a keepalive (1 s), the other's goes on, and the
    signed-out cookie is refused (401 for the API, the sign-in page for pages)."""
    running, session_id, instance = server
    engine = engine_of(instance)
    try:
        add_user(engine, "walker", is_admin=True)  # an admin of its own: sees the admin's session
    finally:
        engine.dispose()
    leaving, staying = Browser(running), Browser(running)
    for browser in (leaving, staying):
        assert browser.submit("/login", "/login", username="walker", password=running.password) == 302
    streams = [leaving.stream(session_id), staying.stream(session_id)]
    try:
        assert [stream.status for stream in streams] == [200, 200]
        signed_out_cookie = leaving.cookie
        assert leaving.submit("/", "/logout") == 302
        assert ends_within(streams[0], 4)
        assert not ends_within(streams[1], 2.5)
        leaving.cookie = signed_out_cookie  # a copy of the cookie, as kept before signing out
        assert leaving.request("GET", "/api/ingest/sessions")[0] == 401
        assert leaving.request("GET", "/sessions")[0] == 302
        refused = leaving.stream(session_id)
        streams.append(refused)
        assert refused.status == 401
        assert staying.request("GET", "/api/ingest/sessions")[0] == 200
    finally:
        for stream in streams:
            stream.close()


@pytest.mark.server
def test_a_users_sessions_past_its_share_wait_for_their_turn(server: tuple[Server, str, Path]) -> None:
    """The admin's one turn is taken by the session that runs for an hour: its next session is
    ``queued`` for its turn (and says so on its page) until cancelled, at once; another user's
    session starts."""
    running, _, instance = server
    media = instance.parent / "media"
    status, waiting = running.request("POST", "/api/ingest/process", {"directory": str(media)})
    assert status == 202
    _, state = running.request("GET", f"/api/ingest/status/{waiting['session_id']}")
    assert (state["status"], state["awaits_turn"]) == (SessionStatus.QUEUED, True)
    _, page = running.request("GET", f"/ingest/{waiting['session_id']}")
    assert b"waits for its turn" in page

    _, token = token_of(instance, "sharer")
    other = {"Authorization": f"Bearer {token}"}
    status, started = running.request("POST", "/api/ingest/process", {"directory": str(media)}, headers=other)
    assert status == 202
    _, state = running.request("GET", f"/api/ingest/status/{started['session_id']}", headers=other)
    assert state["status"] in ACTIVE_STATUSES and state["awaits_turn"] is False

    for session_id, headers in ((waiting["session_id"], None), (started["session_id"], other)):
        assert running.request("POST", f"/api/ingest/{session_id}/cancel", {}, headers=headers)[0] == 202
    _, state = running.request("GET", f"/api/ingest/status/{waiting['session_id']}")
    assert state["status"] == SessionStatus.CANCELLED  # at once: no job ran it
