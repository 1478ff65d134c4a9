"""The job pipeline: scanning, errors as entries, cancel, crash + resume, the hub stays responsive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from ingestapp import create_app, shutdown
from ingestapp.events.model import job_event
from tests.factories import hub_lags, start, wait_for, write_jpeg, write_jpegs

REPO = Path(__file__).resolve().parents[1]


def item_paths(client, session_id: str) -> list[str]:
    return [i["path"] for i in client.get(f"/api/ingest/{session_id}/items?limit=500").get_json()["items"]]


def test_patterns_order_and_max_files(client, app, media: Path) -> None:
    write_jpeg(media / "b.jpg")
    write_jpeg(media / "A.JPG", color=(1, 1, 1))
    write_jpeg(media / "sub" / "c.jpg", color=(2, 2, 2))
    write_jpeg(media / "sub" / "d.png", color=(3, 3, 3))
    (media / "notes.txt").write_text("not media")

    top_level = start(client, media, pattern="*.jpg")
    assert wait_for(app, top_level, {"completed"})["total_files"] == 2
    both = start(client, media, pattern="**/*.jpg, **/*.png", skip_duplicates=False)
    assert wait_for(app, both, {"completed"})["total_files"] == 4
    assert item_paths(client, both) == ["A.JPG", "b.jpg", "sub/c.jpg", "sub/d.png"]
    limited = start(client, media, max_files=3, skip_duplicates=False)
    assert wait_for(app, limited, {"completed"})["total_files"] == 3


def test_bad_files_become_error_entries_and_the_job_goes_on(client, app, media: Path) -> None:
    write_jpegs(media, 3)
    (media / "empty.jpg").write_bytes(b"")
    (media / "fake.jpg").write_text("just text with a .jpg name")
    good = (media / "img_0000.jpg").read_bytes()
    (media / "truncated.jpg").write_bytes(good[: len(good) // 2])
    locked = write_jpeg(media / "locked.jpg", color=(9, 9, 9))
    locked.chmod(0)
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed"})
    errors = {e["file"]: e for e in state["errors"]}
    assert {"empty.jpg", "fake.jpg", "truncated.jpg"} <= set(errors)
    if os.geteuid() != 0:  # root reads anything: permission denied cannot happen here
        assert errors["locked.jpg"]["message"] == "permission denied"
    assert state["stats"]["errors"] == len(state["errors"])
    assert state["processed_files"] + state["stats"]["skipped_duplicates"] == state["total_files"] == 7
    assert all(set(e) == {"file", "stage", "message", "time"} for e in state["errors"])
    assert not any("Traceback" in e["message"] for e in state["errors"])


def test_events_have_increasing_seq_and_one_file_event_per_file(client, app, media: Path) -> None:
    write_jpegs(media, 5)
    received = []

    def on_event(_sender, event):
        received.append(event)

    job_event.connect(on_event)
    try:
        session_id = start(client, media)
        wait_for(app, session_id, {"completed"})
    finally:
        job_event.disconnect(on_event)
    mine = [e for e in received if e.session_id == session_id]
    assert [e.seq for e in mine] == list(range(1, len(mine) + 1))
    assert [e.type for e in mine].count("file") == 5
    assert mine[-1].type == "complete"
    assert {"progress", "stage", "file", "complete"} <= {e.type for e in mine}


def test_cancel_stops_within_a_file_and_keeps_results(client, app_config, media: Path) -> None:
    app = create_app({**app_config, "FILE_DELAY": 0.05})
    try:
        client = app.test_client()
        write_jpegs(media, 60)
        session_id = start(client, media)
        deadline = time.monotonic() + 10
        while app.extensions["ingest_jobs"].state(session_id)["processed_files"] < 5:
            assert time.monotonic() < deadline
            gevent.sleep(0.01)
        assert client.post(f"/api/ingest/{session_id}/cancel", json={}).status_code == 202
        cancelled_at = time.monotonic()
        state = wait_for(app, session_id, {"cancelled"})
        assert time.monotonic() - cancelled_at < 1.0
        assert 5 <= state["processed_files"] < 60
        assert len(item_paths(client, session_id)) == state["processed_files"]
        assert client.post(f"/api/ingest/{session_id}/cancel", json={}).status_code == 409
    finally:
        shutdown(app)


def test_resume_after_a_crash_processes_only_the_rest(tmp_path: Path, app_config: dict, media: Path) -> None:
    write_jpegs(media, 40)
    env = {
        **os.environ,
        "INGEST_INSTANCE_PATH": str(app_config["INSTANCE_PATH"]),
        "INGEST_MEDIA_ROOTS": str(media),
        "INGEST_FILE_DELAY": "0.2",
        "INGEST_WORKERS": "2",
        "INGEST_JOB_LEASE": "1",  # its lease expires a second after its last commit
    }
    if "DATABASE_URL" in app_config:
        env["DATABASE_URL"] = app_config["DATABASE_URL"]
    flask = Path(sys.executable).with_name("flask")
    cli = subprocess.Popen(
        [str(flask), "--app", "ingestapp", "ingest", "run", str(media), "--no-nsfw"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    app = None
    try:
        database = app_config.get("DATABASE_URL") or f"sqlite:///{app_config['INSTANCE_PATH'] / 'ingestapp.sqlite3'}"
        wait_for_items(database, at_least=6)
        cli.send_signal(signal.SIGKILL)  # a crash: no cleanup runs
        cli.wait()
        app = create_app(app_config)  # its reaper finds the dead owner's expired lease
        client = app.test_client()
        sessions = client.get("/api/ingest/sessions").get_json()["sessions"]
        assert len(sessions) == 1
        session_id = sessions[0]["session_id"]
        wait_for(app, session_id, {"interrupted"}, timeout=5)
        last = app.extensions["ingest_jobs"].state(session_id)["last_event_id"]
        with client.get(f"/api/ingest/stream/{session_id}?last_event_id={last - 1}") as response:
            replayed = b"".join(next(iter(response.response)) for _ in range(2))
        assert b"event: progress" in replayed and b'"status":"interrupted"' in replayed  # told on replay
        before = item_paths(client, session_id)
        assert 0 < len(before) < 40
        assert client.post(f"/api/ingest/{session_id}/resume", json={}).status_code == 202
        state = wait_for(app, session_id, {"completed"})
        paths = item_paths(client, session_id)
        assert sorted(paths) == sorted(set(paths)) and len(paths) == 40
        assert state["processed_files"] == 40 and state["total_files"] == 40
        assert state["progress_percent"] == 100.0
        assert client.post(f"/api/ingest/{session_id}/resume", json={}).status_code == 409
    finally:
        if cli.poll() is None:
            cli.kill()
        if app is not None:
            shutdown(app)


def wait_for_items(database_url: str, at_least: int, timeout: float = 30) -> None:
    """Poll the database until a job running elsewhere has persisted ``at_least`` items."""
    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                with engine.connect() as conn:
                    if conn.execute(text("SELECT count(*) FROM items")).scalar_one() >= at_least:
                        return
            except OperationalError:
                pass  # not created yet
            time.sleep(0.05)
    finally:
        engine.dispose()
    raise TimeoutError("the CLI persisted no items")


# This process is not monkey-patched, so a PostgreSQL round trip blocks the hub here; under gunicorn
# it does not (psycopg waits with gevent's select): test_postgres.py shows that in a patched process.
@pytest.mark.serial
@pytest.mark.sqlite_only
@pytest.mark.parametrize("nsfw", [True])
def test_hub_stays_responsive_during_a_full_pipeline_ingest(client, app, media: Path, nsfw: bool) -> None:
    """A ticker greenlet sleeping 5 ms must never wake more than 50 ms late."""
    from ingestapp.cli.samples import write_samples

    write_samples(media)
    write_jpegs(media / "more", 150)  # enough work for 100+ ticks now that decoding is cheaper
    with hub_lags() as lags:
        session_id = start(client, media, enable_nsfw_detection=nsfw)
        state = wait_for(app, session_id, {"completed"}, timeout=120)
    assert state["stats"]["processed_files"] >= 30
    assert len(lags) > 100
    print(f"hub lag over {len(lags)} ticks: max {max(lags) * 1000:.1f} ms")
    assert max(lags) < 0.050, f"hub blocked: {lags.worst()}"


def test_workers_and_queue_add_up_while_running(client, app, media: Path) -> None:
    """Every file found is done, held by a worker, or queued: no worker shows idle while files
    wait, and the queue does not count the workers' end markers."""
    write_jpegs(media, 12)
    registry = app.extensions["ingest_jobs"]
    registry.file_delay = 0.03
    session_id = start(client, media)
    samples = []
    while (state := registry.state(session_id))["status"] in ("queued", "scanning", "processing"):
        if state["stages"]["scanning"]["status"] == "completed":
            samples.append(state)
        gevent.sleep(0.01)
    assert len(samples) >= 5
    for s in samples:
        pool, done = s["worker_pool"], s["processed_files"] + s["stats"]["skipped_duplicates"]
        assert done + pool["active"] + pool["queue_depth"] == s["total_files"], pool
        if pool["queue_depth"]:
            assert pool["active"] == pool["max"] == 2, pool
    final = registry.state(session_id)
    assert final["worker_pool"] == {"active": 0, "max": 2, "queue_depth": 0}


def test_a_restored_state_takes_each_field_by_name_and_processed_from_the_items(tmp_path: Path) -> None:
    """The saved state of an interrupted run, through JSON as the database holds it: ``skipped`` and
    ``duration_ms`` come back as they were, ``processed`` and ``errors`` as the items say (the saved
    counters also counted the file that was in flight), ready to run again."""
    import json

    from ingestapp.core.parameters import IngestParameters
    from ingestapp.jobs.state import JobState, Recorded, StageCount

    names = ["scanning", "identify", "thumbnail"]
    parameters = IngestParameters(directory=str(tmp_path))
    before = JobState("s", parameters, names, concurrency=2)
    identify = before.stages["identify"]
    identify.processed, identify.errors, identify.skipped, identify.duration_ms = 7, 2, 3, 1234.5
    before.stats.update(processed_files=6, errors=3)
    saved = json.loads(json.dumps(before.to_dict(last_event_id=40)))

    after = JobState("s", parameters, names, concurrency=2)
    after.restore(saved, Recorded(stages={"identify": StageCount(processed=6, errors=1)}, error_count=2,
                                  recent_errors=[{"file": "a.jpg", "stage": "identify", "message": "x", "time": 1.0}]))
    restored = after.stages["identify"]
    assert (restored.processed, restored.errors, restored.skipped, restored.duration_ms) == (6, 1, 3, 1234.5)
    assert restored.status == "pending" and restored.in_flight == 0
    assert after.stages["thumbnail"].processed == 0  # the items say no file reached it
    assert after.stats["processed_files"] == 6 and after.stats["errors"] == 2
    assert list(after.errors) == [{"file": "a.jpg", "stage": "identify", "message": "x", "time": 1.0}]
