"""Crashes, races, failing writes and stalled readers, against the real gunicorn where they happen."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.monkey
import pytest
from flask import Flask
from sqlalchemy import select

from ingestapp import create_app, shutdown
from tests.factories import start, wait_for, write_jpegs
from tests.servers import Server, SSEClient, gunicorn

TERMINAL = ("complete", "failed", "cancelled")


def server_start(server: Server, directory: Path, **parameters: Any) -> str:
    body = {"parameters": {"directory": str(directory), "enable_nsfw_detection": False, **parameters}}
    status, answer = server.request("POST", "/api/ingest/process", body)
    assert status == 202, answer
    return answer["session_id"]


def read_until_terminal(client: SSEClient) -> list[dict[str, Any]]:
    events = []
    for event in client.events():
        events.append(event)
        if event["event"] in TERMINAL:
            break
    return events


def read_all_received(client: SSEClient) -> list[dict[str, Any]]:
    """Every event the server managed to send before the connection died."""
    events = []
    with contextlib.suppress(OSError):  # reset by the killed server: what was received counts
        for event in client.events():
            events.append(event)
    return events


@pytest.mark.server
def test_kill_9_restart_race_resume_and_last_event_id(tmp_path: Path, media: Path) -> None:
    write_jpegs(media, 80)
    instance = tmp_path / "instance"
    env = {"INGEST_FILE_DELAY": "0.05", "INGEST_WORKERS": "2"}
    with gunicorn(instance, media, env) as server:
        session_id = server_start(server, media)
        viewer = SSEClient(server.port, f"/api/ingest/stream/{session_id}?last_event_id=0")
        try:
            seen = []
            for event in viewer.events():
                seen.append(event)
                if sum(e["event"] == "file" for e in seen) == 15:
                    break
            server.kill_group()  # mid-job: no shutdown code runs
            killed_at = time.monotonic()
            seen += read_all_received(viewer)
        finally:
            viewer.close()
    assert seen[-1]["event"] not in TERMINAL
    last_seen = int(seen[-1]["id"])

    with gunicorn(instance, media) as server:
        state = server.wait_for_status(session_id, {"interrupted"}, timeout=15)
        interrupted_after = time.monotonic() - killed_at
        assert interrupted_after < 10, f"interrupted only {interrupted_after:.1f} s after the crash"
        assert 15 <= state["processed_files"] < 80

        barrier = threading.Barrier(4)
        answers: list[int] = []

        def race() -> None:
            barrier.wait()
            answers.append(server.request("POST", f"/api/ingest/{session_id}/resume", {})[0])

        threads = [threading.Thread(target=race) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(answers) == [202, 409, 409, 409]

        state = server.wait_for_status(session_id, {"completed"})
        assert state["processed_files"] == state["total_files"] == 80
        _, items = server.request("GET", f"/api/ingest/{session_id}/items?limit=500")
        assert items["total"] == 80 and len({i["path"] for i in items["items"]}) == 80

        replay = SSEClient(server.port, f"/api/ingest/stream/{session_id}?last_event_id=0")
        resumed = SSEClient(server.port, f"/api/ingest/stream/{session_id}", {"Last-Event-ID": str(last_seen)})
        try:
            full = read_until_terminal(replay)
            after = read_until_terminal(resumed)
        finally:
            replay.close(), resumed.close()
    by_id = {int(e["id"]): e["data"] for e in full}
    assert [int(e["id"]) for e in full] == sorted(by_id)
    for event in seen:  # every id the viewer saw before the crash still names the same event
        assert by_id[int(event["id"])] == event["data"]
    assert [(e["id"], e["data"]) for e in after] == [(e["id"], e["data"]) for e in full if int(e["id"]) > last_seen]
    files = [e["data"]["path"] for e in full if e["event"] == "file"]
    assert len(files) == len(set(files)) == 80  # every file exactly once, across the crash
    print(f"interrupted {interrupted_after:.1f} s after kill -9")


def test_a_failing_write_fails_the_session_everywhere(app_config: dict, media: Path) -> None:
    app = create_app({**app_config, "FILE_DELAY": 0.01})
    try:
        client = app.test_client()
        write_jpegs(media, 30)
        database = app_config["INSTANCE_PATH"] / "ingestapp.sqlite3"
        with sqlite3.connect(database) as conn:  # the database itself refuses one row, as a full disk would
            conn.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON items WHEN NEW.path = 'img_0012.jpg' "
                "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
            )
        session_id = start(client, media)
        response = client.get(f"/api/ingest/stream/{session_id}?last_event_id=0")
        try:
            events = []
            for chunk in response.response:
                events += [line[7:] for line in chunk.decode().split("\n") if line.startswith("event: ")]
                if events and events[-1] in TERMINAL:
                    break
        finally:
            response.close()
        assert events[-1] == "failed"
        state = client.get(f"/api/ingest/status/{session_id}").get_json()
        assert state["status"] == "failed"
        assert state["message"] == "database write failed: database or disk is full"
        assert session_id not in app.extensions["ingest_jobs"].jobs
        with sqlite3.connect(database) as conn:
            status, saved = conn.execute("SELECT status, state FROM ingest_sessions").fetchone()
            last_type = conn.execute("SELECT type FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0]
            lease = conn.execute("SELECT lease_owner FROM ingest_sessions").fetchone()[0]
        assert (status, json.loads(saved)["message"], last_type, lease) == ("failed", state["message"], "failed", None)
        assert json.loads(saved)["last_event_id"] == state["last_event_id"]
        assert client.post(f"/api/ingest/{session_id}/cancel", json={}).status_code == 409
    finally:
        shutdown(app)


def test_a_cancel_reaches_a_job_owned_by_another_process(app_config: dict, media: Path) -> None:
    """Two apps on one database stand for two processes: the cancel goes through the row."""
    # A 3 s lease, renewed every 0.6 s: a 1 s one lapsed once under the suite's load (the hub held
    # up > 1 s), and a cancel through the row refuses a lapsed owner (409). 40 files of 0.1 s on two
    # stage processes: the job outlasts the cancel's way through the row.
    owner = create_app({**app_config, "FILE_DELAY": 0.1, "JOB_LEASE": 3})
    other = create_app(app_config)
    try:
        write_jpegs(media, 40)
        session_id = start(owner.test_client(), media)
        wait_for(owner, session_id, {"processing"})
        client = other.test_client()
        assert client.post(f"/api/ingest/{session_id}/resume", json={}).status_code == 409
        assert client.post(f"/api/ingest/{session_id}/commit", json={}).status_code == 409
        assert client.post(f"/api/ingest/{session_id}/cancel", json={}).status_code == 202
        state = wait_for(owner, session_id, {"cancelled"}, timeout=5)
        assert state["processed_files"] < 40
        assert client.post(f"/api/ingest/{session_id}/commit", json={}).status_code == 200
    finally:
        shutdown(owner), shutdown(other)


def test_the_scan_waits_for_the_workers(app_config: dict, media: Path) -> None:
    app = create_app({**app_config, "FILE_DELAY": 0.02, "SCAN_QUEUE": 5, "WORKERS": 2})
    try:
        for i in range(60):
            (media / f"f_{i:03d}.jpg").write_bytes(b"")  # each becomes an error entry: fast
        session_id = start(app.test_client(), media)
        job = app.extensions["ingest_jobs"].jobs[session_id]
        depths, ahead = [], []
        while session_id in app.extensions["ingest_jobs"].jobs:
            depths.append(job.queue.qsize())
            ahead.append(job.state.stages["scanning"].processed - job.state.timing.run_done)
            gevent.sleep(0.005)
        state = app.extensions["ingest_jobs"].state(session_id)
    finally:
        shutdown(app)
    assert state["status"] == "completed" and state["processed_files"] == 60
    assert max(depths) <= 5
    assert max(ahead) <= 5 + 2 + 1  # queued, in the workers' hands, and the one waiting to be queued


@pytest.mark.server
def test_max_age_ends_a_stream_whose_write_is_blocked(tmp_path: Path, media: Path) -> None:
    # 500 unreadable files 3,750 characters deep: an `error` and a `file` event each, ~4 MB of log,
    # more than a loopback connection's buffers hold, so the replay's writes block.
    deep = media.joinpath(*(letter * 250 for letter in "abcdefghijklmno"))
    deep.mkdir(parents=True)
    for i in range(500):
        (deep / f"f_{i:03d}.jpg").write_bytes(b"")
    env = {"INGEST_SSE_MAX_AGE": "1", "INGEST_SSE_SEND_TIMEOUT": "300"}
    with gunicorn(tmp_path / "instance", media, env) as server:
        session_id = server_start(server, media)
        server.wait_for_status(session_id, {"completed"})
        stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            stuck.connect(("127.0.0.1", server.port))
            stuck.sendall(f"GET /api/ingest/stream/{session_id}?last_event_id=0 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         f"Authorization: Bearer {server.token}\r\n\r\n".encode())
            opened = time.monotonic()
            while (metrics := server.request("GET", "/api/ingest/metrics")[1])["slow_client_drops"] < 1:
                assert time.monotonic() - opened < 5, metrics
                time.sleep(0.05)
        finally:
            stuck.close()
        assert metrics["open_streams"] == 0


def test_an_owner_that_lost_its_lease_writes_nothing_more(app_config: dict, media: Path) -> None:
    """A stalled owner whose lease was reaped stops at its next commit; the resume finishes the job."""
    from sqlalchemy import update

    from ingestapp.jobs.leases import reap_expired
    from ingestapp.store.models import IngestSession

    stalled = create_app({**app_config, "FILE_DELAY": 0.05})
    other = create_app(app_config)
    try:
        write_jpegs(media, 30)
        session_id = start(stalled.test_client(), media)
        wait_for(stalled, session_id, {"processing"})
        engine = other.extensions["ingest_db"]
        with engine.begin() as conn:  # as if the owner had not renewed its lease in time
            conn.execute(update(IngestSession).values(lease_expires_at=0))
        assert len(reap_expired(engine)) == 1
        job = stalled.extensions["ingest_jobs"].jobs.get(session_id)
        if job is not None:
            job.greenlet.join(timeout=5)
        assert session_id not in stalled.extensions["ingest_jobs"].jobs
        client = other.test_client()
        state = client.get(f"/api/ingest/status/{session_id}").get_json()
        assert state["status"] == "interrupted"
        assert client.post(f"/api/ingest/{session_id}/resume", json={}).status_code == 202
        state = wait_for(other, session_id, {"completed"})
        assert state["processed_files"] == 30
        items = client.get(f"/api/ingest/{session_id}/items?limit=500").get_json()["items"]
        assert len(items) == len({i["path"] for i in items}) == 30
        events = client.get(f"/api/ingest/stream/{session_id}?last_event_id=0")
        try:
            body = b"".join(iter(events.response))
        finally:
            events.close()
        ids = [int(line[4:]) for line in body.split(b"\n") if line.startswith(b"id: ")]
        assert ids == list(range(1, len(ids) + 1))  # no id written twice, none skipped
    finally:
        shutdown(stalled), shutdown(other)


def test_a_process_that_stood_still_past_its_lease_keeps_its_jobs(app_config: dict, media: Path) -> None:
    """A suspended machine or a paused VM (here: the whole process blocked for over two leases)
    wakes with its own running jobs' leases lapsed on the wall clock; its reaper must let their
    writers renew first instead of marking the live jobs ``interrupted``."""
    stand_still = gevent.monkey.get_original("time", "sleep")  # blocks every greenlet, as a suspend does
    app = create_app({**app_config, "JOB_LEASE": 1, "FILE_DELAY": 0.1})
    try:
        write_jpegs(media, 60)  # about 3 s with two stage processes
        session_id = start(app.test_client(), media)
        wait_for(app, session_id, {"processing"})
        for _ in range(2):
            stand_still(2.2)
            gevent.sleep(0.3)  # awake for less than the lease: then still again
        state = wait_for(app, session_id, {"completed", "interrupted"})
        assert state["status"] == "completed" and state["processed_files"] == 60, state["status"]
    finally:
        shutdown(app)


def test_a_session_waiting_for_the_work_tier_is_not_reaped_and_cancels_at_once(
    app: Flask, client, media: Path
) -> None:
    """Queued for ``flask --app ingestapp worker`` processes that have not taken it yet: it has no
    lease to expire, and a cancel stops it by itself, with its ``cancelled`` event in the log."""
    from ingestapp.core.parameters import IngestParameters
    from ingestapp.jobs.job import Job
    from ingestapp.jobs.leases import reap_expired
    from ingestapp.store.models import IngestSession

    registry = app.extensions["ingest_jobs"]
    job = Job(registry, "waiting0000000000000000000000000", IngestParameters(directory=str(media)))
    with registry.engine.begin() as conn:
        conn.execute(IngestSession.__table__.insert().values(
            id=job.session_id, status="queued", parameters=job.parameters.to_dict(), state=job.committed_state,
            created_at=time.time(), lease_owner=None, lease_expires_at=None,
        ))
    assert reap_expired(registry.engine) == []
    assert client.post(f"/api/ingest/{job.session_id}/cancel", json={}).status_code == 202
    assert registry.state(job.session_id)["status"] == "cancelled"
    events = client.get(f"/api/ingest/stream/{job.session_id}?last_event_id=0")
    try:
        body = b"".join(iter(events.response))
    finally:
        events.close()
    assert b"id: 1\nevent: cancelled\n" in body


def write_noise_jpegs(directory: Path, count: int) -> list[Path]:
    """``count`` distinct JPEGs of random pixels: their thumbnail takes a while (~0.1-0.5 s), so a
    file spends long between its identify report and its item."""
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"noise_{i:03d}.jpg" for i in range(count)]
    for path in paths:
        Image.frombytes("RGB", (1000, 750), os.urandom(1000 * 750 * 3)).save(path, quality=85)
    return paths


def persisted(database: Path) -> tuple[dict[str, Any], list[tuple[str, str, list[dict[str, str]]]], list[tuple]]:
    """The session's committed state, its items ``(path, status, errors)`` and its error entries."""
    with contextlib.closing(sqlite3.connect(database, timeout=5)) as conn:
        state = json.loads(conn.execute("SELECT state FROM ingest_sessions").fetchone()[0])
        items = [(p, s, json.loads(e)) for p, s, e in conn.execute("SELECT path, status, errors FROM items")]
        errors = conn.execute("SELECT file, stage, message FROM errors").fetchall()
    return state, items, errors


def stage_counts_of(items: list[tuple[str, str, list[dict[str, str]]]], names: list[str]) -> dict[str, dict]:
    """What the items say of each stage: every item passed it once; it failed the item when an error
    names it; it was skipped after the item's first failed stage, or after identify for a duplicate."""
    counts = {name: {"processed": len(items), "errors": 0, "skipped": 0} for name in names}
    for _, status, errors in items:
        for error in errors:
            counts[error["stage"]]["errors"] += 1
        last_run = names.index(errors[0]["stage"]) if errors else 0 if status == "skipped" else len(names)
        for name in names[last_run + 1:]:
            counts[name]["skipped"] += 1
    return counts


@pytest.mark.server
def test_kill_9_mid_file_then_resume_counts_every_file_once(tmp_path: Path, media: Path) -> None:
    """The process dies while a file has been through identify but not recorded: the persisted
    stage counters are ahead of the items. After the resume every stage's counters are what the
    items say, skipped and duration_ms went on from their saved values, and no error is counted twice."""
    originals = write_noise_jpegs(media, 24)
    for i, original in enumerate(originals[:4]):  # duplicates: identify runs, the later stages are skipped
        (media / f"z_copy_{i}.jpg").write_bytes(original.read_bytes())
    for i in range(4):  # corrupt: a stage fails, the later ones are skipped
        (media / f"z_broken_{i}.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    instance = tmp_path / "instance"
    database = instance / "ingestapp.sqlite3"
    with gunicorn(instance, media, {"INGEST_WORKERS": "2"}) as server:
        session_id = server_start(server, media)
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "no commit ever had a file between identify and its item"
            state, items, _ = persisted(database)
            if len(items) >= 4 and state["stages"]["identify"]["processed"] > len(items):
                server.kill_group()  # a file is in its thumbnail stage: no shutdown code runs
                break
            time.sleep(0.005)
    before, items_before, _ = persisted(database)
    assert before["stages"]["identify"]["processed"] > len(items_before), "not killed mid-file"
    assert len(items_before) < 32
    names = [name for name in before["stages"] if name != "scanning"]

    with gunicorn(instance, media, {"INGEST_WORKERS": "2"}) as server:
        server.wait_for_status(session_id, {"interrupted"}, timeout=30)
        assert server.request("POST", f"/api/ingest/{session_id}/resume", {})[0] == 202
        after = server.wait_for_status(session_id, {"completed"})
    state, items, errors = persisted(database)
    assert state == {**after, "status": state["status"]}
    assert len(items) == len({path for path, _, _ in items}) == after["total_files"] == 32
    expected = stage_counts_of(items, names)
    for name in names:
        stage = after["stages"][name]
        assert {key: stage[key] for key in ("processed", "errors", "skipped")} == expected[name], name
        assert stage["duration_ms"] >= before["stages"][name]["duration_ms"], name
        assert stage["skipped"] >= before["stages"][name]["skipped"], name
    assert expected["thumbnail"]["skipped"] >= 8  # the duplicates' and the broken files'
    assert len(errors) == len(set(errors)) == after["stats"]["errors"] == sum(len(e) for _, _, e in items)
    assert after["stats"]["processed_files"] + after["stats"]["skipped_duplicates"] == 32


def test_a_resume_drops_the_errors_of_files_without_an_item(app: Flask, media: Path) -> None:
    """A file that failed a stage and died before its item was written runs again on resume: its
    error entry goes, the scan's and the recorded files' stay, and the counts are the items'."""
    from ingestapp.core.parameters import IngestParameters
    from ingestapp.jobs import recorded
    from ingestapp.jobs.job import Job
    from ingestapp.jobs.state import StageCount
    from ingestapp.store.models import ErrorEntry, IngestSession, Item

    registry = app.extensions["ingest_jobs"]
    job = Job(registry, "resumed000000000000000000000000", IngestParameters(directory=str(media)))
    error = {"session_id": job.session_id, "message": "bad", "time": 1.0}
    with registry.engine.begin() as conn:
        conn.execute(IngestSession.__table__.insert().values(
            id=job.session_id, status="interrupted", parameters=job.parameters.to_dict(), state=job.committed_state,
            created_at=time.time(), last_event_id=9,
        ))
        conn.execute(Item.__table__.insert().values(
            id="item", session_id=job.session_id, seq=1, root=str(media), path="a.jpg", path_bytes=b"a.jpg",
            status="error", sha256="ab" * 32, fields={}, errors=[{"stage": "metadata", "message": "bad"}],
        ))
        conn.execute(ErrorEntry.__table__.insert(), [
            {**error, "file": "a.jpg", "stage": "metadata"},  # recorded with its item
            {**error, "file": "b.jpg", "stage": "metadata"},  # its file died before its item: it runs again
            {**error, "file": "gone.jpg", "stage": "scanning"},  # the scan's own
        ])
        earlier = recorded.read(conn, job.session_id)
    assert earlier.done_paths == {b"a.jpg"} and earlier.last_event_id == 9
    assert earlier.seen_hashes == {"ab" * 32: media / "a.jpg"}
    assert earlier.recorded.stages["metadata"] == StageCount(processed=1, errors=1)
    assert earlier.recorded.stages["thumbnail"] == StageCount(processed=1, errors=0)
    assert earlier.recorded.error_count == 2
    assert [(e["file"], e["stage"]) for e in earlier.recorded.recent_errors] == [("a.jpg", "metadata"),
                                                                               ("gone.jpg", "scanning")]
    with registry.engine.connect() as conn:
        assert sorted(conn.scalars(select(ErrorEntry.file))) == ["a.jpg", "gone.jpg"]
