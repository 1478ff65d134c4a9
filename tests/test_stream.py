"""The SSE endpoint through the Flask test client, read incrementally and always closed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import gevent
import pytest

from ingestapp import create_app, shutdown
from ingestapp.events.broker import Broker, Subscription
from ingestapp.events.model import job_event, make_event
from tests.factories import start, wait_for, write_jpegs


def parse(frame: bytes) -> dict[str, str]:
    """The fields of one SSE frame; asserts every line is a well-formed field or comment."""
    assert frame.endswith(b"\n\n"), frame
    fields = {}
    for line in frame.decode().rstrip("\n").split("\n"):
        name, sep, value = line.partition(": ") if not line.startswith(":") else (":", ": ", line[1:])
        assert sep and name in {"id", "event", "data", "retry", ":"}, line
        fields[name] = value
    return fields


def frames_of(response) -> Iterator[dict[str, str]]:
    """Parsed frames, read chunk by chunk (a chunk holds one or more whole frames, never none)."""
    for chunk in iter(response.response):
        assert chunk.endswith(b"\n\n"), chunk
        for frame in chunk[:-2].split(b"\n\n"):
            yield parse(frame + b"\n\n")


@contextmanager
def stream(client, session_id: str, **headers: str) -> Iterator[Iterator[dict[str, str]]]:
    response = client.get(f"/api/ingest/stream/{session_id}", headers=headers)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    try:
        yield frames_of(response)
    finally:
        response.close()


def events_until_terminal(frames: Iterator[dict[str, str]]) -> list[dict[str, str]]:
    return [f for f in frames if "event" in f]


@pytest.fixture
def slow_app(app_config: dict):
    app = create_app({**app_config, "FILE_DELAY": 0.02})
    yield app
    shutdown(app)
    app.extensions["ingest_broker"].disconnect()


def test_headers_retry_then_snapshot_then_increasing_ids(slow_app, media: Path) -> None:
    client = slow_app.test_client()
    write_jpegs(media, 10)
    session_id = start(client, media)
    response = client.get(f"/api/ingest/stream/{session_id}")
    try:
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert "Content-Length" not in response.headers and "Content-Encoding" not in response.headers
        frames = frames_of(response)
        assert next(frames) == {"retry": "2000"}
        snapshot = next(frames)
        assert snapshot["event"] == "snapshot"
        state = json.loads(snapshot["data"])
        assert state["session_id"] == session_id and state["reset"] is False
        assert int(snapshot["id"]) == state["last_event_id"]
        events = events_until_terminal(frames)
    finally:
        response.close()
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(set(ids)) and ids[0] > state["last_event_id"]
    assert events[-1]["event"] == "complete"
    assert sum(e["event"] == "file" for e in events) == 10
    for event in events:
        data = json.loads(event["data"])
        assert data["seq"] == int(event["id"]) and data["type"] == event["event"]
        assert abs(data["emitted_at"] - time.time()) < 60


def test_resume_from_last_event_id_yields_exactly_the_missing_events(slow_app, media: Path) -> None:
    client = slow_app.test_client()
    write_jpegs(media, 30)
    session_id = start(client, media)
    with stream(client, session_id) as frames:
        next(frames), next(frames)
        first_part = [next(frames) for _ in range(15)]
    resume_id = int(first_part[-1]["id"])
    assert slow_app.extensions["ingest_jobs"].state(session_id)["status"] == "processing"
    with stream(client, session_id, **{"Last-Event-ID": str(resume_id)}) as frames:
        assert next(frames) == {"retry": "2000"}
        rest = events_until_terminal(frames)
    assert rest[-1]["event"] == "complete"
    all_ids = [e["seq"] for e in all_events(slow_app, session_id)]
    assert [int(e["id"]) for e in rest] == [i for i in all_ids if i > resume_id]
    # query-string form, after the job: replay of everything after 3
    with stream(client, session_id, **{}) as _:
        pass
    response = client.get(f"/api/ingest/stream/{session_id}?last_event_id=3")
    try:
        replayed = events_until_terminal(frames_of(response))
    finally:
        response.close()
    assert [int(e["id"]) for e in replayed] == [i for i in all_ids if i > 3]


def all_events(app, session_id: str) -> list[dict]:
    from ingestapp.events.log import events_after

    return [json.loads(e.data) for batch in events_after(app.extensions["ingest_db"], session_id, 0) for e in batch]


def test_unknown_last_event_id_gets_a_reset_snapshot(client, app, media: Path) -> None:
    write_jpegs(media, 2)
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed"})
    for bad in (str(state["last_event_id"] + 100), "not-a-number", "\u00b2"):
        with stream(client, session_id, **{"Last-Event-ID": bad}) as frames:
            assert "retry" in next(frames)
            snapshot = next(frames)
            assert snapshot["event"] == "snapshot"
            assert json.loads(snapshot["data"])["reset"] is True
            assert list(frames) == []  # finished session: the response ends after the snapshot


def test_finished_session_with_its_last_id_gets_204(client, app, media: Path) -> None:
    write_jpegs(media, 1)
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed"})
    response = client.get(f"/api/ingest/stream/{session_id}", headers={"Last-Event-ID": str(state["last_event_id"])})
    assert response.status_code == 204
    assert app.extensions["ingest_broker"].metrics()["open_streams"] == 0


def test_unknown_session_is_404_before_any_stream(client) -> None:
    response = client.get("/api/ingest/stream/does-not-exist")
    assert response.status_code == 404
    assert response.get_json() == {"error": "no such session", "field": "session_id"}
    assert client.get("/api/ingest/metrics").get_json()["open_streams"] == 0


def test_hostile_filenames_cannot_break_the_framing(client, app, media: Path) -> None:
    from tests.factories import write_jpeg

    names = ['new\nline.jpg', 'carriage\rreturn.jpg', 'quote"s\'.jpg', "data: x.jpg", "id: 99.jpg", "\u2028ls.jpg"]
    for i, name in enumerate(names):
        write_jpeg(media / name, color=(i, 10, 10))
    (media / "event: complete\n\ndata: {}.jpg").write_bytes(b"not an image")
    session_id = start(client, media)
    with stream(client, session_id) as frames:
        events = events_until_terminal(frames)  # parse() asserts every line of every frame
    paths = {json.loads(e["data"])["path"] for e in events if e["event"] == "file"}
    assert paths == {*names, "event: complete\n\ndata: {}.jpg"}
    assert events[-1]["event"] == "complete"


def test_keepalive_while_idle_and_stale_streams_end(app_config: dict, media: Path) -> None:
    app = create_app({**app_config, "SSE_KEEPALIVE": 0.1, "SSE_MAX_AGE": 0.5})
    try:
        client = app.test_client()
        write_jpegs(media, 1)
        session_id = start(client, media)
        wait_for(app, session_id, {"completed"})
        app.extensions["ingest_jobs"].engine.dispose()
        # An interrupted session stays open (it may be resumed): only keepalives flow.
        from sqlalchemy import update

        from ingestapp.store.models import IngestSession

        with app.extensions["ingest_db"].begin() as conn:
            conn.execute(update(IngestSession).values(status="interrupted"))
        started = time.monotonic()
        with stream(client, session_id) as frames:
            rest = list(frames)[2:]
        assert rest and all(f == {":": " keepalive"} for f in rest)
        assert 0.5 <= time.monotonic() - started < 2.0
    finally:
        shutdown(app)


def test_closing_the_response_releases_the_subscription(client, app, media: Path) -> None:
    write_jpegs(media, 1)
    session_id = start(client, media)
    broker = app.extensions["ingest_broker"]
    response = client.get(f"/api/ingest/stream/{session_id}")
    next(iter(response.response))
    assert broker.metrics()["open_streams"] == 1
    response.close()
    assert broker.metrics()["open_streams"] == 0
    metrics = client.get("/api/ingest/metrics").get_json()
    assert set(metrics) >= {"open_streams", "open_streams_by_session", "events_emitted", "events_delivered",
                            "events_conflated", "events_replayed", "disconnects"}


def test_a_slow_subscriber_is_bounded_and_catches_up_from_the_log(app_config: dict, media: Path) -> None:
    app = create_app({**app_config, "SSE_QUEUE": 5})
    try:
        client = app.test_client()
        write_jpegs(media, 40)
        session_id = start(client, media)
        with stream(client, session_id) as frames:
            next(frames), next(frames)  # then read nothing while the job runs
            subscription = next(iter(app.extensions["ingest_broker"].subscriptions[session_id]))
            while app.extensions["ingest_jobs"].state(session_id)["status"] != "completed":
                assert len(subscription) <= 5
                gevent.sleep(0.005)
            events = events_until_terminal(frames)
        files = [json.loads(e["data"])["path"] for e in events if e["event"] == "file"]
        assert files == sorted(files) or len(files) == 40
        assert sorted(files) == [f"img_{i:04d}.jpg" for i in range(40)] and len(set(files)) == 40
        ids = [int(e["id"]) for e in events]
        assert ids == sorted(set(ids))
        assert app.extensions["ingest_broker"].metrics()["events_replayed"] > 0
    finally:
        shutdown(app)


def test_subscription_conflates_progress_but_never_drops_files() -> None:
    subscription = Subscription("s", maxsize=3)
    progress = [make_event("s", seq, "progress", {}) for seq in (1, 3, 5)]
    file_event = make_event("s", 2, "file", {"path": "a"})
    stage_a = make_event("s", 4, "stage", {"stage": "metadata"})
    stage_b = make_event("s", 6, "stage", {"stage": "metadata"})
    assert subscription.put(progress[0]) is False
    subscription.put(file_event)
    assert subscription.put(progress[1]) is True  # replaced seq 1
    subscription.put(stage_a)
    assert subscription.put(progress[2]) is True
    assert subscription.put(stage_b) is True
    assert [subscription.get(0).seq for _ in range(3)] == [2, 5, 6]
    assert subscription.get(0.01) is None and not subscription.overflowed
    for seq in range(10, 14):
        subscription.put(make_event("s", seq, "file", {}))
    assert subscription.overflowed and len(subscription) == 0


def test_streams_opened_during_shutdown_end_after_their_snapshot(slow_app, media: Path) -> None:
    client = slow_app.test_client()
    write_jpegs(media, 50)
    session_id = start(client, media)
    slow_app.extensions["ingest_broker"].close_all()
    response = client.get(f"/api/ingest/stream/{session_id}")
    try:
        frames = list(frames_of(response))  # ends by itself: the browser reconnects to the next worker
    finally:
        response.close()
    assert [f.get("event") for f in frames] == [None, "snapshot"]
    assert slow_app.extensions["ingest_jobs"].state(session_id)["status"] in ("queued", "scanning", "processing")


def test_the_broker_keeps_recent_events_for_streams_that_fell_behind() -> None:
    """One in-memory copy of a watched session's latest consecutive events serves every stream that
    overflowed; a hole in seq, a resync or the last viewer leaving drops it (then: the SQL log)."""
    broker = Broker(queue_size=10)
    try:
        subscription = broker.subscribe("s")
        for seq in range(1, 8):
            job_event.send("s", event=make_event("s", seq, "progress", {}))
        job_event.send("s", event=make_event("s", 7, "progress", {}))  # a duplicate is not kept twice
        assert [e.seq for e in broker.recent_after("s", 4)] == [5, 6, 7]
        assert [e.seq for e in broker.recent_after("s", 0)] == list(range(1, 8))
        assert broker.recent_after("s", 7) == []
        job_event.send("s", event=make_event("s", 9, "progress", {}))  # 8 never arrived here
        assert broker.recent_after("s", 4) is None and [e.seq for e in broker.recent_after("s", 8)] == [9]
        broker.resync("s")
        assert broker.recent_after("s", 8) is None
        job_event.send("other", event=make_event("other", 1, "progress", {}))  # nobody watches it
        assert broker.recent_after("other", 0) is None
        broker.unsubscribe(subscription)
        assert "s" not in broker.recent
    finally:
        broker.disconnect()
