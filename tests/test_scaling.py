"""Several workers: the real gunicorn with WEB_CONCURRENCY=4, a real redis-server (the event bus)
and a real PostgreSQL (the shared store). Viewers on every worker get every event; a killed worker's
viewers resume on the others; a Redis restart mid-job loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gevent
import psutil
import pytest

from tests.factories import write_jpegs
from tests.servers import GUNICORN, REPO, Server, SSEClient, free_port, gunicorn
from tests.services import RedisServer, lease_owner_pid

# Four gunicorn workers, Redis and PostgreSQL on two cores: their start-up bounds hold only alone.
pytestmark = [pytest.mark.server, pytest.mark.serial]

FILES = 60
TERMINAL = ("complete", "failed", "cancelled")


@pytest.fixture(scope="module")
def media_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def running_cluster(
    tmp_path_factory: pytest.TempPathFactory, media_root: Path, module_database: str, module_redis: RedisServer
) -> Iterator[Server]:
    """One cluster for the module: its start (four workers, each with its stage processes) is most
    of a test's time. Each test ingests a folder of its own and compares metrics before and after."""
    env = {
        "WEB_CONCURRENCY": "4",
        "REDIS_URL": module_redis.url,
        "DATABASE_URL": module_database,
        "INGEST_FILE_DELAY": "0.1",
        "INGEST_WORKERS": "2",
        "INGEST_SSE_KEEPALIVE": "0.5",
    }
    with gunicorn(tmp_path_factory.mktemp("instance"), media_root, env) as server:
        yield server


@pytest.fixture
def cluster(running_cluster: Server) -> Server:
    """The module's cluster, once its four workers are up (gunicorn replaces one a test killed)."""
    wait_for_workers(running_cluster, 4)
    return running_cluster


@pytest.fixture
def folder(media_root: Path, request: pytest.FixtureRequest) -> Path:
    """This test's folder in the cluster's media root."""
    return media_root / request.node.name


def wait_for_workers(server: Server, count: int, timeout: float = 30) -> list[psutil.Process]:
    """The worker processes, once ``count`` of them have booted and the bus is up in each."""
    deadline = time.monotonic() + timeout
    workers: list[psutil.Process] = []
    body = b""
    while time.monotonic() < deadline:
        workers = psutil.Process(server.process.pid).children()
        if len(workers) == count:
            _, body = server.request("GET", "/metrics")
            if body.decode().count("ingest_bus_up{") >= count and "} 0.0" not in bus_lines(body):
                return workers
        time.sleep(0.1)
    raise TimeoutError(f"{count} workers did not come up: {len(workers)} processes, bus {bus_lines(body)!r}")


def metric(server: Server, sample: str) -> float:
    """The value of the ``/metrics`` sample whose name and labels are ``sample`` (0 when absent)."""
    for line in server.request("GET", "/metrics")[1].decode().splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


def bus_lines(metrics: bytes) -> str:
    return "\n".join(line for line in metrics.decode().splitlines() if line.startswith("ingest_bus_up{"))


def start(server: Server, directory: Path) -> str:
    status, body = server.request(
        "POST", "/api/ingest/process", {"parameters": {"directory": str(directory), "enable_nsfw_detection": False}},
    )
    assert status == 202, body
    return body["session_id"]


def connections_by_worker(server: Server) -> dict[int, int]:
    """How many client connections each worker process holds (pid -> count)."""
    counts = {}
    for worker in psutil.Process(server.process.pid).children():
        counts[worker.pid] = sum(
            1 for c in worker.net_connections(kind="tcp")
            if c.laddr and c.laddr.port == server.port and c.status == psutil.CONN_ESTABLISHED
        )
    return counts


def open_spread(server: Server, session_id: str, count: int) -> list[SSEClient]:
    """``count`` viewers (replay from the first event, then live), opened a few at a time so the
    workers' accept loops share them."""
    clients = []
    for _ in range(count):
        clients.append(SSEClient(server.port, f"/api/ingest/stream/{session_id}?last_event_id=0"))
        gevent.sleep(0.01)
    return clients


def follow(server: Server, client: SSEClient, session_id: str) -> dict[str, Any]:
    """Read a viewer to the terminal event, reconnecting with Last-Event-ID (as a browser does)
    whenever its connection ends early. Returns the ids, file paths and reconnect count."""
    ids: list[int] = []
    paths: list[str] = []
    reconnects = 0
    while True:
        try:
            for event in client.events():
                if "id" in event and event["event"] != "snapshot":
                    ids.append(int(event["id"]))
                if event["event"] == "file":
                    paths.append(event["data"]["path"])
                if event["event"] in TERMINAL:
                    client.close()
                    return {"ids": ids, "paths": paths, "reconnects": reconnects}
        except (TimeoutError, ConnectionError, ValueError):
            pass
        client.close()
        reconnects += 1
        assert reconnects < 20, "too many reconnections"
        gevent.sleep(0.2)  # the SSE retry delay
        headers = {"Last-Event-ID": str(ids[-1])} if ids else {}
        client = SSEClient(server.port, f"/api/ingest/stream/{session_id}?last_event_id=0"
                           if not ids else f"/api/ingest/stream/{session_id}", headers)


def assert_every_event_once_in_order(results: list[dict[str, Any]]) -> None:
    for result in results:
        ids = result["ids"]
        assert ids == list(range(ids[0], ids[0] + len(ids))), "a gap or a duplicate"
        assert len(result["paths"]) == FILES == len(set(result["paths"]))
    assert all(r["paths"] == results[0]["paths"] for r in results)


COMPLETED = 'ingest_sessions{status="completed"}'
IDENTIFIED = 'ingest_files_total{outcome="ok",stage="identify"}'


def test_viewers_on_every_worker_get_every_event(cluster: Server, folder: Path, module_database: str) -> None:
    completed, identified = metric(cluster, COMPLETED), metric(cluster, IDENTIFIED)
    write_jpegs(folder, FILES)
    session_id = start(cluster, folder)
    clients = open_spread(cluster, session_id, 32)
    try:
        spread = connections_by_worker(cluster)
        owner = lease_owner_pid(module_database, session_id)
        assert sum(1 for n in spread.values() if n) >= 2, spread  # viewers on several workers
        assert any(n for pid, n in spread.items() if pid != owner), "no viewer on a worker other than the job's"
        assert metric(cluster, "ingest_open_streams") == 32  # /metrics sums the workers' live gauges
        results = [gevent.spawn(follow, cluster, c, session_id) for c in clients]
        finished = gevent.joinall(results, timeout=90, raise_error=True)
        assert len(finished) == len(results), "viewers still waiting after 90 s"
    finally:
        for c in clients:
            c.close()
    assert_every_event_once_in_order([r.value for r in results])
    assert metric(cluster, COMPLETED) == completed + 1
    assert metric(cluster, IDENTIFIED) == identified + FILES
    text = cluster.request("GET", "/metrics")[1].decode()
    assert "ingest_events_delivered_total" in text and "ingest_stage_duration_seconds_bucket" in text


def test_a_killed_worker_s_viewers_resume_on_the_others(cluster: Server, folder: Path, module_database: str) -> None:
    write_jpegs(folder, FILES)
    session_id = start(cluster, folder)
    clients = open_spread(cluster, session_id, 32)
    try:
        owner = lease_owner_pid(module_database, session_id)
        spread = connections_by_worker(cluster)
        victim = max((pid for pid in spread if pid != owner), key=lambda pid: spread[pid])
        assert spread[victim] > 0, spread
        results = [gevent.spawn(follow, cluster, c, session_id) for c in clients]
        gevent.sleep(1.0)  # mid-job
        os.kill(victim, signal.SIGKILL)
        finished = gevent.joinall(results, timeout=90, raise_error=True)
        assert len(finished) == len(results), "viewers still waiting after 90 s"
    finally:
        for c in clients:
            c.close()
    values = [r.value for r in results]
    assert sum(v["reconnects"] for v in values) >= spread[victim]  # its viewers had to come back
    assert_every_event_once_in_order(values)
    assert cluster.request("GET", f"/api/ingest/status/{session_id}")[1]["status"] == "completed"


def test_a_redis_restart_mid_job_loses_nothing(cluster: Server, folder: Path, module_redis: RedisServer) -> None:
    write_jpegs(folder, FILES)
    session_id = start(cluster, folder)
    clients = open_spread(cluster, session_id, 16)
    try:
        results = [gevent.spawn(follow, cluster, c, session_id) for c in clients]
        gevent.sleep(1.0)
        module_redis.stop()
        deadline = time.monotonic() + 10
        while "} 0.0" not in bus_lines(cluster.request("GET", "/metrics")[1]):
            assert time.monotonic() < deadline, "the metrics never said the bus was down"
            gevent.sleep(0.1)
        assert cluster.request("GET", "/api/ingest/metrics")[1]["bus_up"] is False
        gevent.sleep(1.0)  # the job goes on; the streams only get keepalives
        assert not any(r.ready() for r in results), "a stream ended during the outage"
        module_redis.start()
        finished = gevent.joinall(results, timeout=90, raise_error=True)
        assert len(finished) == len(results), "viewers still waiting after 90 s"
    finally:
        for c in clients:
            c.close()
    values = [r.value for r in results]
    assert_every_event_once_in_order(values)
    assert all(v["reconnects"] == 0 for v in values)  # the streams stayed open through the outage


def test_several_workers_without_redis_are_refused(tmp_path: Path, media: Path) -> None:
    env = {**os.environ, "WEB_CONCURRENCY": "2", "INGEST_INSTANCE_PATH": str(tmp_path / "instance"),
           "INGEST_MEDIA_ROOTS": str(media), "INGEST_BIND": f"127.0.0.1:{free_port()}"}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [str(GUNICORN), "-c", "gunicorn.conf.py", "wsgi:app"], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "REDIS_URL" in result.stderr
