"""A real gunicorn (gevent worker, the shipped gunicorn.conf.py) serving ingests and SSE streams."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path

import gevent
import psutil
import pytest

from ingestapp.cli.samples import write_samples
from tests.factories import write_jpegs
from tests.servers import Server, SSEClient, gunicorn

pytestmark = pytest.mark.server


def start(server: Server, directory: Path, **parameters) -> str:
    status, body = server.request(
        "POST", "/api/ingest/process",
        {"parameters": {"directory": str(directory), "enable_nsfw_detection": False, **parameters}},
    )
    assert status == 202, body
    return body["session_id"]


def file_paths(client: SSEClient) -> list[str]:
    """Read a stream to its terminal event; the paths of its ``file`` events, in order."""
    paths = []
    for event in client.events():
        if event["event"] == "file":
            paths.append(event["data"]["path"])
        if event["event"] in ("complete", "failed", "cancelled"):
            break
    return paths


#: These tests open hundreds of streams as the one test admin: lift the per-user share (50).
ONE_USER_MANY_STREAMS = {"INGEST_MAX_STREAMS_PER_USER": "20000"}


@pytest.fixture
def server(tmp_path: Path, media: Path):
    with gunicorn(tmp_path / "instance", media, {"INGEST_FILE_DELAY": "0.01", **ONE_USER_MANY_STREAMS}) as running:
        yield running


def test_full_sample_ingest_through_the_api(tmp_path: Path, media: Path) -> None:
    write_samples(media)
    with gunicorn(tmp_path / "instance", media) as server:
        session_id = start(server, media, enable_nsfw_detection=True)
        state = server.wait_for_status(session_id, {"completed", "failed"}, timeout=120)
        assert state["status"] == "completed" and state["progress_percent"] == 100.0
        assert state["processed_files"] + state["stats"]["skipped_duplicates"] == state["total_files"] >= 10
        assert state["stats"]["errors"] >= 1  # the sample set's corrupt file
        assert state["stats"]["keywords_added"] > 0 and state["stats"]["scores_imported"] > 0
        status, items = server.request("GET", f"/api/ingest/{session_id}/items?limit=500")
        assert all(i["nsfw_score"] is not None for i in items["items"] if i["status"] == "ok")
        status, result = server.request("POST", f"/api/ingest/{session_id}/commit", {})
        assert status == 200 and result["added"] == sum(i["status"] == "ok" for i in items["items"])


@pytest.mark.serial  # a timing bound: other tests' load would be measured
def test_200_streams_each_get_every_file_event_once_in_order(server: Server, media: Path) -> None:
    write_jpegs(media, 60)
    session_id = start(server, media, max_files=60)
    # Last-Event-ID 0: the job is already running; replay from its first event, then go live.
    clients = [SSEClient(server.port, f"/api/ingest/stream/{session_id}?last_event_id=0") for _ in range(200)]
    try:
        results = [gevent.spawn(file_paths, c) for c in clients]
        gevent.joinall(results, timeout=60, raise_error=True)
    finally:
        for c in clients:
            c.close()
    expected = None
    for result in results:
        paths = result.value
        assert len(paths) == len(set(paths))
        expected = expected or paths
        assert paths == expected
    assert len(expected) == 60


def test_two_sessions_never_cross(server: Server, media: Path) -> None:
    write_jpegs(media / "a", 20, prefix="a")
    write_jpegs(media / "b", 20, prefix="b")
    first, second = start(server, media / "a"), start(server, media / "b")
    a = SSEClient(server.port, f"/api/ingest/stream/{first}?last_event_id=0")
    b = SSEClient(server.port, f"/api/ingest/stream/{second}?last_event_id=0")
    try:
        readers = [gevent.spawn(file_paths, a), gevent.spawn(file_paths, b)]
        gevent.joinall(readers, raise_error=True)
        got_a, got_b = (reader.value for reader in readers)
    finally:
        a.close(), b.close()
    assert len(got_a) == 20 and all(p.startswith("a/a_") for p in got_a)
    assert len(got_b) == 20 and all(p.startswith("b/b_") for p in got_b)


@pytest.mark.serial
def test_closing_1000_idle_streams_releases_them_within_2s(tmp_path: Path, media: Path) -> None:
    write_jpegs(media, 16)
    env = {"INGEST_FILE_DELAY": "3", "INGEST_WORKERS": "2", **ONE_USER_MANY_STREAMS}
    with gunicorn(tmp_path / "instance", media, env) as server:
        session_id = start(server, media)  # runs for ~24 s: its streams stay open and idle
        server.wait_for_status(session_id, {"processing"})
        time.sleep(0.5)  # the first files' events are out; the next come 3 s after them
        _, baseline = server.request("GET", "/api/ingest/metrics?greenlets=1")
        sockets = []
        try:
            for _ in range(1000):
                s = socket.create_connection(("127.0.0.1", server.port))
                head = f"Host: 127.0.0.1\r\nAuthorization: Bearer {server.token}"
                s.sendall(f"GET /api/ingest/stream/{session_id} HTTP/1.1\r\n{head}\r\n\r\n".encode())
                sockets.append(s)
            deadline = time.monotonic() + 20
            while server.request("GET", "/api/ingest/metrics")[1]["open_streams"] < 1000:
                assert time.monotonic() < deadline, "streams did not open"
                time.sleep(0.05)
        finally:
            for s in sockets:
                s.close()
        closed_at = time.monotonic()
        while server.request("GET", "/api/ingest/metrics")[1]["open_streams"] > 0:
            assert time.monotonic() - closed_at < 2.0, "streams still open 2 s after their clients left"
            time.sleep(0.02)
        released_in = time.monotonic() - closed_at
        _, after = server.request("GET", "/api/ingest/metrics?greenlets=1")
        assert server.request("GET", f"/api/ingest/status/{session_id}")[1]["status"] == "processing"
    assert after["greenlets"] <= baseline["greenlets"] + 2, (baseline, after)
    assert after["disconnects"] >= 990
    print(f"released 1000 streams in {released_in * 1000:.0f} ms")


@pytest.mark.serial
def test_clients_that_never_read_stay_bounded_then_are_dropped(tmp_path: Path, media: Path) -> None:
    # 1,400 files 3,750 characters deep make ~5 MB of `file` events: more than the kernel buffers
    # of a connection absorb on loopback (~2.8 MB measured), so the stuck clients' writes really
    # block: their queues must stay bounded, and after INGEST_SSE_SEND_TIMEOUT they are dropped.
    deep = media.joinpath(*(letter * 250 for letter in "abcdefghijklmno"))
    write_jpegs(deep, 1400)
    # The file delay keeps the job running (~5 s) past the moment the stuck writes have blocked 2 s.
    env = {"INGEST_SSE_QUEUE": "50", "INGEST_SSE_SEND_TIMEOUT": "2", "INGEST_FILE_DELAY": "0.004"}
    light = {"extract_metadata": False, "extract_keywords": False, "import_scores": False, "skip_duplicates": False}
    with gunicorn(tmp_path / "instance", media, env) as server:
        process = psutil.Process(server.process.pid)
        children = process.children()
        worker = children[0] if children else process
        warm = start(server, media, max_files=20, **light)
        server.wait_for_status(warm, {"completed"})
        rss_before = worker.memory_info().rss

        session_id = start(server, media, **light)
        stuck = []
        for _ in range(2):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", server.port))
            head = f"Host: 127.0.0.1\r\nAuthorization: Bearer {server.token}"
            sock.sendall(f"GET /api/ingest/stream/{session_id} HTTP/1.1\r\n{head}\r\n\r\n".encode())
            stuck.append(sock)
        reader = SSEClient(server.port, f"/api/ingest/stream/{session_id}?last_event_id=0")
        watching = True
        samples: list[dict] = []

        def watch_metrics() -> None:
            while watching:
                samples.append({**server.request("GET", "/api/ingest/metrics")[1],
                                "status": server.request("GET", f"/api/ingest/status/{session_id}")[1]["status"]})
                gevent.sleep(0.1)

        watcher = gevent.spawn(watch_metrics)
        try:
            paths = file_paths(reader)
            rss_after = worker.memory_info().rss
        finally:
            watching = False
            watcher.join()
            reader.close()
            for sock in stuck:
                sock.close()
        assert len(paths) == 1400 and len(set(paths)) == 1400
        assert rss_after - rss_before < 20 * 1024 * 1024, (rss_before, rss_after)
        assert all(m["queued_events"] <= 3 * 50 for m in samples)  # three streams, none past INGEST_SSE_QUEUE
        dropped = [m for m in samples if m["slow_client_drops"] == 2]
        assert dropped and dropped[0]["status"] == "processing", samples[-1]  # dropped while the job ran
        assert dropped[0]["open_streams"] == 1  # only the reader


def test_sigterm_with_open_streams_exits_within_graceful_timeout(tmp_path: Path, media: Path) -> None:
    write_jpegs(media, 200)
    with gunicorn(tmp_path / "instance", media, {"INGEST_FILE_DELAY": "0.05"}) as server:
        session_id = start(server, media)
        clients = [SSEClient(server.port, f"/api/ingest/stream/{session_id}") for _ in range(20)]
        try:
            for c in clients:
                next(c.frames())
            started = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=10)  # graceful_timeout in gunicorn.conf.py
            took = time.monotonic() - started
        finally:
            for c in clients:
                c.close()
        assert took < 10
        log = server.log.read_text()
        assert "graceful timeout" not in log.lower(), log[-2000:]
    print(f"exited {took:.2f} s after SIGTERM")


def test_interrupted_job_resumes_after_restart(tmp_path: Path, media: Path) -> None:
    write_jpegs(media, 80)
    with gunicorn(tmp_path / "instance", media, {"INGEST_FILE_DELAY": "0.05"}) as server:
        session_id = start(server, media)
        deadline = time.monotonic() + 30
        while server.request("GET", f"/api/ingest/status/{session_id}")[1]["processed_files"] < 5:
            assert time.monotonic() < deadline, "no file processed"
            time.sleep(0.05)
    with gunicorn(tmp_path / "instance", media) as server:
        _, state = server.request("GET", f"/api/ingest/status/{session_id}")
        assert state["status"] == "interrupted" and 0 < state["processed_files"] < 80
        assert server.request("POST", f"/api/ingest/{session_id}/resume", {})[0] == 202
        state = server.wait_for_status(session_id, {"completed"})
        assert state["processed_files"] == 80
        _, items = server.request("GET", f"/api/ingest/{session_id}/items?limit=500")
        assert items["total"] == 80 and len({i["path"] for i in items["items"]}) == 80
    print(json.dumps(state["timing"]))
