"""Fair shares between users (issue 16, point 7): a user runs at most
INGEST_MAX_ACTIVE_SESSIONS_PER_USER sessions at once (1 here); the next ones are ``queued`` for their
turn and start by themselves, oldest first, when one of the user's running sessions ends. Another
user is not held back, a session waiting for its turn is cancelled at once, a resume waits for its
turn as a new session does, and a watching session takes no turn. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from pathlib import Path

import gevent
import pytest
from flask import Flask

from ingestapp import create_app, shutdown
from ingestapp.core.vocabulary import EventType, SessionStatus
from ingestapp.events.log import events_after
from tests.auth_support import new_token
from tests.factories import start, wait_for, write_jpegs


@pytest.fixture
def app_config(app_config: dict) -> dict:
    """One turn per user; each file waits 50 ms in its stage process (a 40-file job takes a second)."""
    return {**app_config, "MAX_ACTIVE_SESSIONS_PER_USER": 1, "FILE_DELAY": 0.05}


@pytest.fixture
def serving(app: Flask) -> Flask:
    """The app as a server runs it (``JobRegistry.serve``): it gives waiting sessions their turns."""
    app.extensions["ingest_jobs"].serve()
    return app


def status_of(client, session_id: str) -> dict:
    response = client.get(f"/api/ingest/status/{session_id}")
    assert response.status_code == 200
    return response.get_json()


def test_sessions_past_the_share_wait_for_their_turn(serving: Flask, client, media: Path) -> None:
    app, registry = serving, serving.extensions["ingest_jobs"]
    for name, count in (("first", 40), ("second", 3), ("third", 3), ("other", 3)):
        write_jpegs(media / name, count, prefix=name)
    first, second, third = (start(client, media / name) for name in ("first", "second", "third"))
    for held in (second, third):
        state = status_of(client, held)
        assert (state["status"], state["awaits_turn"]) == (SessionStatus.QUEUED, True)
    assert "waits for its turn" in client.get(f"/ingest/{second}").get_data(as_text=True)

    bob = app.test_client(token=new_token(app.extensions["ingest_db"], "bob", is_admin=False))
    other = start(bob, media / "other")  # another user's share is their own
    assert status_of(bob, other)["awaits_turn"] is False
    assert wait_for(app, other, {SessionStatus.COMPLETED})["processed_files"] == 3

    assert client.post(f"/api/ingest/{third}/cancel", json={}).status_code == 202
    assert status_of(client, third)["status"] == SessionStatus.CANCELLED  # at once: no job ran it

    while registry.state(first)["status"] != SessionStatus.COMPLETED:
        assert registry.state(second)["status"] == SessionStatus.QUEUED  # not before its turn
        gevent.sleep(0.01)
    assert wait_for(app, second, {SessionStatus.COMPLETED})["processed_files"] == 3
    assert status_of(client, third)["processed_files"] == 0
    first_event = next(events_after(app.extensions["ingest_db"], second, 0))[0]
    data = json.loads(first_event.data)
    assert (first_event.type, data["status"], data["awaits_turn"]) == (
        EventType.PROGRESS, SessionStatus.QUEUED, False,  # its page learns that the wait is over
    )


def test_a_resume_past_the_share_waits_for_its_turn(serving: Flask, client, app_config: dict, media: Path) -> None:
    write_jpegs(media / "stopped", 30, prefix="stopped")
    write_jpegs(media / "running", 30, prefix="running")
    earlier = create_app(app_config)  # a server that stops mid-job: its session becomes interrupted
    try:
        stopped = start(earlier.test_client(), media / "stopped")
        while earlier.extensions["ingest_jobs"].state(stopped)["processed_files"] < 2:
            gevent.sleep(0.01)
    finally:
        shutdown(earlier)
        earlier.extensions["ingest_broker"].disconnect()
        earlier.extensions["ingest_db"].dispose()
    assert status_of(client, stopped)["status"] == SessionStatus.INTERRUPTED

    running = start(client, media / "running")
    assert client.post(f"/api/ingest/{stopped}/resume", json={}).status_code == 202
    state = status_of(client, stopped)
    assert (state["status"], state["awaits_turn"]) == (SessionStatus.QUEUED, True)
    assert wait_for(serving, running, {SessionStatus.COMPLETED})["processed_files"] == 30
    assert wait_for(serving, stopped, {SessionStatus.COMPLETED})["processed_files"] == 30


def test_a_watching_session_takes_no_turn(serving: Flask, client, media: Path) -> None:
    """A watch takes its user's turn while it scans; once it idles (``watching``) the next session
    gets the turn at the reaper's next pass."""
    write_jpegs(media / "watched", 6, prefix="watched")
    write_jpegs(media / "next", 2, prefix="next")
    watch = start(client, media / "watched", watch=True)
    after = start(client, media / "next")
    assert status_of(client, after)["awaits_turn"] is True
    assert wait_for(serving, after, {SessionStatus.COMPLETED})["processed_files"] == 2
    assert status_of(client, watch)["status"] == SessionStatus.WATCHING
    assert client.post(f"/api/ingest/{watch}/cancel", json={}).status_code == 202
    wait_for(serving, watch, {SessionStatus.CANCELLED})
