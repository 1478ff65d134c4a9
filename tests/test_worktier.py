"""The scale-out work tier: a real gunicorn, a real redis-server, a real PostgreSQL and two real
``flask --app ingestapp worker`` processes. A worker killed with SIGKILL mid-job, whether it runs
the job or only some of its files, or stopped with SIGTERM, loses nothing: the session completes
with every file recorded once, and the items name both workers. Cancel takes effect within 2 s. A
user's sessions past INGEST_MAX_ACTIVE_SESSIONS_PER_USER wait for their turn."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis

from ingestapp.core.vocabulary import SessionStatus
from tests.factories import write_jpegs
from tests.servers import REPO, Server, gunicorn
from tests.services import RedisServer, lease_owner_pid

pytestmark = pytest.mark.server

FILES = 48


class Worker:
    """A ``flask --app ingestapp worker --concurrency N`` process and its log."""

    def __init__(self, instance: Path, env: dict[str, str], concurrency: int = 2) -> None:
        instance.mkdir(parents=True, exist_ok=True)
        self.log = instance / "worker.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "ingestapp", "worker", "--concurrency", str(concurrency)],
                cwd=REPO, env={**os.environ, **env, "INGEST_INSTANCE_PATH": str(instance)}, stdout=out, stderr=out,
            )
        self.name = f"{socket.gethostname()}:{self.process.pid}"  # exec keeps the pid


def stop_all(workers: list[Worker]) -> None:
    """SIGTERM (Celery's warm shutdown, ~5 s when idle) to every worker at once, then wait for each."""
    running = [w for w in workers if w.process.poll() is None]
    for worker in running:
        worker.process.send_signal(signal.SIGTERM)
    for worker in running:
        try:
            worker.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()


@pytest.fixture(scope="module")
def running_tier(
    tmp_path_factory: pytest.TempPathFactory, module_database: str, module_redis: RedisServer
) -> Iterator[dict]:
    """The web server and the workers (two at a time: see ``tier``) sharing the media root, the
    thumbnails and the store, for the whole module: starting a gunicorn and two workers, and
    stopping the workers (~5 s), was most of each test's time."""
    root = tmp_path_factory.mktemp("tier")
    (root / "media").mkdir()
    env = {
        "REDIS_URL": module_redis.url,
        "DATABASE_URL": module_database,
        "INGEST_MEDIA_ROOTS": str(root / "media"),
        "INGEST_THUMBNAIL_DIR": str(root / "thumbnails"),
        "INGEST_JOB_LEASE": "2",
        "INGEST_TASK_FILES": "2",
        "INGEST_TASK_VISIBILITY_TIMEOUT": "4",
        "INGEST_FILE_DELAY": "0.15",
        "INGEST_SSE_KEEPALIVE": "0.5",
    }
    workers: list[Worker] = []
    with ExitStack() as stack:
        server = stack.enter_context(gunicorn(root / "web", root / "media", env))
        stack.callback(stop_all, workers)
        client = redis.Redis.from_url(module_redis.url)
        stack.callback(client.close)
        yield {"server": server, "workers": workers, "database": module_database, "media": root / "media",
               "root": root, "env": env, "redis": client}


@pytest.fixture
def tier(running_tier: dict) -> dict:
    """The module's tier with two live workers: a worker an earlier test stopped is replaced."""
    workers: list[Worker] = running_tier["workers"]
    workers[:] = [worker for worker in workers if worker.process.poll() is None]
    while len(workers) < 2:
        workers.append(Worker(running_tier["root"] / f"worker-{secrets.token_hex(3)}", running_tier["env"]))
    wait_for_heartbeats(running_tier["redis"], workers)
    return {**running_tier, "workers": list(workers)}


@pytest.fixture
def folder(running_tier: dict, request: pytest.FixtureRequest) -> Path:
    """This test's folder in the tier's media root."""
    return running_tier["media"] / request.node.name


def wait_for_heartbeats(client: redis.Redis, workers: list[Worker], timeout: float = 60) -> None:
    """Until every worker beats and its Celery consumer is up (its log's "ready."): the heartbeat
    comes first, and a job started before a new worker consumes may run all its files on the other
    one (seen under full load, with a replacement worker beside one that had run for minutes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = {name.decode() for name in client.zrange("ingestapp:workers", 0, -1)}
        if alive >= {w.name for w in workers} and all(" ready." in w.log.read_text() for w in workers):
            return
        for worker in workers:
            assert worker.process.poll() is None, worker.log.read_text()
        time.sleep(0.1)
    raise TimeoutError("workers did not start: " + "\n".join(w.log.read_text() for w in workers))


def start(server: Server, directory: Path) -> str:
    status, body = server.request(
        "POST", "/api/ingest/process", {"parameters": {"directory": str(directory), "enable_nsfw_detection": False}},
    )
    assert status == 202, body
    return body["session_id"]


def items(server: Server, session_id: str) -> list[dict]:
    status, body = server.request("GET", f"/api/ingest/{session_id}/items?limit=500")
    assert status == 200, body
    return body["items"]


def wait_until(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.parametrize(("victim", "how"), [
    # its lease expires; the reaper queues the session again
    pytest.param("runs the job", signal.SIGKILL, id="SIGKILL-job"),
    pytest.param("runs files only", signal.SIGKILL, id="SIGKILL-files"),  # its tasks are delivered again
    pytest.param("runs the job", signal.SIGTERM, id="SIGTERM-job"),  # a graceful stop hands the job over
])
def test_a_worker_stopped_mid_job_loses_nothing(tier: dict, folder: Path, victim: str, how: signal.Signals) -> None:
    server, workers = tier["server"], tier["workers"]
    write_jpegs(folder, FILES)
    session_id = start(server, folder)
    wait_until(lambda: lease_owner_pid(tier["database"], session_id) is not None)
    owner = lease_owner_pid(tier["database"], session_id)
    assert owner in {w.process.pid for w in workers}, "the job runs in a worker, not in the web server"
    victim_worker = next(w for w in workers if (w.process.pid == owner) == (victim == "runs the job"))
    survivor = next(w for w in workers if w is not victim_worker)
    wait_until(lambda: {i["worker"] for i in items(server, session_id)} == {w.name for w in workers})

    victim_worker.process.send_signal(how)
    victim_worker.process.wait(timeout=30)
    done_at_kill = len(items(server, session_id))
    assert done_at_kill < FILES, "the job ended before the kill: nothing was tested"

    state = server.wait_for_status(session_id, {"completed"}, timeout=90)
    recorded = items(server, session_id)
    counts = Counter(i["path"] for i in recorded)
    assert len(counts) == FILES and set(counts.values()) == {1}, "every file exactly once"
    assert {i["status"] for i in recorded} == {"ok"}
    assert {i["worker"] for i in recorded} == {victim_worker.name, survivor.name}
    assert state["processed_files"] == FILES and state["stats"]["errors"] == 0
    assert all(stage["in_flight"] == 0 for stage in state["stages"].values())


def test_cancel_takes_effect_within_2_s(tier: dict, folder: Path) -> None:
    server = tier["server"]
    write_jpegs(folder, FILES)
    session_id = start(server, folder)
    wait_until(lambda: len(items(server, session_id)) >= 4)
    status, _ = server.request("POST", f"/api/ingest/{session_id}/cancel", {})
    assert status == 202
    cancelled_at = time.monotonic()
    state = server.wait_for_status(session_id, {"cancelled"}, timeout=10)
    assert time.monotonic() - cancelled_at < 2.0
    assert state["processed_files"] < FILES
    time.sleep(1)  # the workers start no file of the cancelled run
    assert len(items(server, session_id)) == state["processed_files"] + state["stats"]["skipped_duplicates"]


def test_a_users_sessions_past_its_share_wait_for_their_turn(tier: dict, folder: Path) -> None:
    """INGEST_MAX_ACTIVE_SESSIONS_PER_USER (default 4): the admin's fifth session waits for its turn,
    is sent to the work tier only once one of the four has ended, and then runs there."""
    server, workers = tier["server"], tier["workers"]
    for n in range(4):
        write_jpegs(folder / f"s{n}", 12, prefix=f"s{n}")
    write_jpegs(folder / "fifth", 4, prefix="fifth")
    four = [start(server, folder / f"s{n}") for n in range(4)]
    fifth = start(server, folder / "fifth")

    def state_of(session_id: str) -> dict:
        return server.request("GET", f"/api/ingest/status/{session_id}")[1]

    assert (state_of(fifth)["status"], state_of(fifth)["awaits_turn"]) == (SessionStatus.QUEUED, True)
    while state_of(fifth)["awaits_turn"]:
        time.sleep(0.05)
    # Read after its turn came: one of the four must have ended by then.
    assert SessionStatus.COMPLETED in {state_of(session_id)["status"] for session_id in four}
    state = server.wait_for_status(fifth, {SessionStatus.COMPLETED}, timeout=60)
    assert state["processed_files"] == 4
    assert {i["worker"] for i in items(server, fifth)} <= {w.name for w in workers}
    for session_id in four:
        assert server.wait_for_status(session_id, {SessionStatus.COMPLETED}, timeout=60)["processed_files"] == 12


def test_a_run_that_lapsed_before_its_renewal_is_opened_again_and_a_cancelled_one_is_not(
    redis_service: RedisServer, tmp_path: Path,
) -> None:
    """A job whose renewal came after its run key expired (a busy host) opens the run again and sends
    the files no worker answered once more: the workers had dropped them, and the job would have
    waited for them for ever (seen once, a session left ``processing``). A cancelled run stays closed."""
    from ingestapp.core.parameters import IngestParameters
    from ingestapp.work.protocol import FileResult, FileTask
    from ingestapp.work.remote import CANCELLED, RUN_KEY, RemoteFiles, request_cancel

    client = redis.Redis.from_url(redis_service.url)
    sent: list[tuple[str, list[str]]] = []

    def send(_session: str, run_id: str, files: list[dict]) -> None:
        sent.append((run_id, [f["relpath"] for f in files]))

    remote = RemoteFiles(client, "s1", send, task_files=1, ttl=0.5, is_duplicate=lambda *_: False,
                         on_cancel=lambda: None)
    tasks = [FileTask(path=tmp_path / name, relpath=name, parameters=IngestParameters(directory=str(tmp_path)),
                      thumbnail_dir=tmp_path, real_path=None, identity=None, media_roots=(tmp_path,),
                      stages=("ingestapp.stages.identify",), check_duplicates=False) for name in ("a.jpg", "b.jpg")]
    run_key = RUN_KEY.format(session_id="s1")
    try:
        remote.start()
        for task in tasks:
            remote._add(task)  # sent at once (task_files=1), as run_file does before it waits
        assert sent == [(remote.run_id, ["a.jpg"]), (remote.run_id, ["b.jpg"])]
        # a.jpg's result came (as the reader hands it over): only b.jpg is still awaited
        remote._handle({"kind": "result", "result": FileResult(key=tasks[0].key, worker="w:1").to_dict()})

        time.sleep(0.6)  # past the 0.5 s ttl with no renewal: the key expired, workers drop the files
        assert client.get(run_key) is None
        remote.renew()
        assert client.get(run_key) == remote.run_id.encode()
        assert sent[2:] == [(remote.run_id, ["b.jpg"])]

        time.sleep(0.2)  # renewals come at most every fifth of the ttl
        remote.renew()
        assert sent[3:] == [], "an open run is only extended"
        assert 0 < client.pttl(run_key) <= 500

        request_cancel(client, "s1")
        time.sleep(0.2)
        remote.renew()
        assert client.get(run_key) == CANCELLED and sent[3:] == [], "a cancelled run was opened again"
    finally:
        remote.stop()
        client.close()
