"""The work pool: stage work in other processes at a lower priority, errors attributed to their
stage, a crashing worker process replaced without failing the job, cancel within 2 s, processes
shared round robin by session."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import gevent
import pytest
from flask import Flask

from ingestapp import stages
from ingestapp.core.vocabulary import SessionStatus
from ingestapp.work.fairshare import FairShare
from tests import pool_stages
from tests.factories import start, wait_for, write_jpeg, write_jpegs

PROBE = stages.Stage(pool_stages.NAME, pool_stages.__name__)


@pytest.fixture
def probe_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """The probe stage runs right after identify, in every session started meanwhile."""
    monkeypatch.setattr(stages, "STAGES", [stages.STAGES[0], PROBE, *stages.STAGES[1:]])


def items(client, session_id: str) -> dict[str, dict]:
    return {i["path"]: i for i in client.get(f"/api/ingest/{session_id}/items?limit=500").get_json()["items"]}


def test_stages_run_in_worker_processes_at_lower_priority(probe_stage, client, app: Flask, media: Path) -> None:
    write_jpegs(media, 6)
    write_jpeg(media / "fail.jpg", color=(1, 1, 1))
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed"})
    thumbnails = app.extensions["ingest_jobs"].thumbnail_dir
    probes = [p.read_text().split() for p in thumbnails.glob("*.probe")]
    assert len(probes) == 6
    pids = {int(pid) for pid, _ in probes}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # WORKERS = 2
    assert {int(nice) for _, nice in probes} == {min(19, os.nice(0) + 10)}  # INGEST_WORKER_NICE
    assert [(e["file"], e["stage"], e["message"]) for e in state["errors"]] == [
        ("fail.jpg", "probe", "the probe refused this file")
    ]
    probe, metadata = state["stages"]["probe"], state["stages"]["metadata"]
    assert (probe["processed"], probe["errors"], probe["in_flight"], probe["status"]) == (7, 1, 0, "completed")
    assert (metadata["processed"], metadata["skipped"]) == (7, 1)  # not run after the failure
    found = items(client, session_id)
    assert found["img_0000.jpg"]["status"] == "ok" and found["img_0000.jpg"]["thumbnail_url"]
    assert found["fail.jpg"]["status"] == "error" and found["fail.jpg"]["sha256"]  # identify's result kept


def test_a_file_rewritten_while_it_is_read_gets_no_hash_and_no_thumbnail(
    monkeypatch: pytest.MonkeyPatch, client, app: Flask, media: Path
) -> None:
    """One content, one hash, one thumbnail (issue 16, point 6): the probe rewrites the file after
    identify hashed it and the thumbnail stage wrote its picture; the file becomes an error in
    words, and neither the old content's hash nor the thumbnail drawn from mixed reads stays."""
    monkeypatch.setattr(stages, "STAGES", [*stages.STAGES, PROBE])  # the probe runs last
    write_jpeg(media / "rewrite.jpg", color=(10, 20, 30))
    old = hashlib.sha256((media / "rewrite.jpg").read_bytes()).hexdigest()
    write_jpegs(media, 2)
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed"})
    found = items(client, session_id)
    rewritten = found["rewrite.jpg"]
    assert rewritten["status"] == "error"
    assert rewritten["sha256"] is None and rewritten["thumbnail_url"] is None
    assert "changed while it was being read" in rewritten["errors"][0]["message"]
    assert [e["file"] for e in state["errors"]] == ["rewrite.jpg"]
    thumbnails = app.extensions["ingest_jobs"].thumbnail_dir
    assert not (thumbnails / old[:2] / f"{old}.jpg").exists()
    assert all(found[f"img_{i:04d}.jpg"]["status"] == "ok" for i in range(2))


def test_a_dying_worker_process_is_an_error_entry_and_is_replaced(
    probe_stage, client, app: Flask, media: Path
) -> None:
    write_jpegs(media, 8)
    write_jpeg(media / "exit.jpg", color=(1, 1, 1))
    write_jpeg(media / "kill.jpg", color=(2, 2, 2))
    pool = app.extensions["ingest_jobs"].pool
    replaced = pool.replaced
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed"})
    assert sorted((e["file"], e["stage"], e["message"]) for e in state["errors"]) == [
        ("exit.jpg", "probe", "worker process died"),
        ("kill.jpg", "probe", "worker process died"),
    ]
    assert state["processed_files"] == 10 and state["stats"]["errors"] == 2
    assert state["stages"]["probe"]["in_flight"] == 0
    assert pool.replaced == replaced + 2
    found = items(client, session_id)
    assert [p for p, i in found.items() if i["status"] == "ok"] == [f"img_{i:04d}.jpg" for i in range(8)]

    again = start(client, media, pattern="img_*.jpg", skip_duplicates=False)  # the new processes work
    state = wait_for(app, again, {"completed"})
    assert (state["processed_files"], state["stats"]["errors"]) == (8, 0)


def test_cancel_takes_effect_within_2_s_with_files_in_flight(probe_stage, client, app: Flask, media: Path) -> None:
    write_jpegs(media, 40, prefix="slow")
    session_id = start(client, media)
    registry = app.extensions["ingest_jobs"]
    while registry.state(session_id)["processed_files"] < 2:
        gevent.sleep(0.01)
    assert client.post(f"/api/ingest/{session_id}/cancel", json={}).status_code == 202
    cancelled_at = time.monotonic()
    state = wait_for(app, session_id, {"cancelled"})
    assert time.monotonic() - cancelled_at < 2.0
    assert 2 <= state["processed_files"] <= 6  # pending files were not run
    assert state["worker_pool"]["active"] == 0


def test_cancel_abandons_a_file_that_takes_too_long(probe_stage, client, app: Flask, media: Path) -> None:
    write_jpegs(media, 3, prefix="hang")
    pool = app.extensions["ingest_jobs"].pool
    replaced = pool.replaced
    session_id = start(client, media)
    registry = app.extensions["ingest_jobs"]
    while registry.state(session_id)["stages"]["probe"]["in_flight"] < 2:  # both processes hang
        gevent.sleep(0.01)
    assert client.post(f"/api/ingest/{session_id}/cancel", json={}).status_code == 202
    cancelled_at = time.monotonic()
    state = wait_for(app, session_id, {"cancelled"})
    assert time.monotonic() - cancelled_at < 2.0
    assert state["processed_files"] == 0 and state["stages"]["probe"]["in_flight"] == 0
    assert items(client, session_id) == {}  # an abandoned file is not recorded: it can be ingested again
    assert pool.replaced == replaced + 2  # the hanging processes were killed


@pytest.mark.serial  # a timing bound: other tests' load would be measured
def test_a_file_past_the_time_limit_is_an_error_entry(probe_stage, app_config: dict, media: Path) -> None:
    from ingestapp import create_app, shutdown

    app = create_app({**app_config, "FILE_TIME_LIMIT": 1.0})
    try:
        write_jpegs(media, 2)
        write_jpeg(media / "hang.jpg", color=(3, 3, 3))
        session_id = start(app.test_client(), media)
        state = wait_for(app, session_id, {"completed"})
        assert [(e["file"], e["stage"], e["message"]) for e in state["errors"]] == [
            ("hang.jpg", "probe", "took longer than 1 s (INGEST_FILE_TIME_LIMIT)")
        ]
        assert state["processed_files"] == 3 and state["stages"]["probe"]["in_flight"] == 0
    finally:
        shutdown(app)


def test_items_name_the_pool_process_that_ran_them(client, app: Flask, media: Path) -> None:
    write_jpegs(media, 4)
    session_id = start(client, media)
    wait_for(app, session_id, {"completed"})
    workers = {item["worker"] for item in items(client, session_id).values()}
    hosts_and_pids = [worker.rsplit(":", 1) for worker in workers]
    assert hosts_and_pids and all(host == socket.gethostname() for host, _ in hosts_and_pids)
    assert all(int(pid) != os.getpid() for _, pid in hosts_and_pids)  # a pool process, not the web process


def test_the_file_protocol_round_trips_through_json(tmp_path: Path) -> None:
    """The work tier carries the same messages as the pipe: a task and a result survive JSON,
    a name that is not UTF-8 included; the scan's identity is dropped on another host."""
    import json
    from dataclasses import replace

    from ingestapp.core.parameters import IngestParameters
    from ingestapp.work.protocol import FileResult, FileTask, StageReport

    name = os.fsdecode(b"caf\xe9.jpg")  # Latin-1 bytes: a surrogate escape in str form
    task = FileTask(
        path=tmp_path / name, relpath="café.jpg", parameters=IngestParameters(directory=str(tmp_path)),
        thumbnail_dir=tmp_path / "thumbs", real_path=str(tmp_path / name), identity=(5, 77),
        media_roots=(tmp_path,), stages=("ingestapp.stages.identify",), check_duplicates=True, delay=0.25,
    )
    data = json.loads(json.dumps(task.to_dict()))
    assert FileTask.from_dict(data, task.thumbnail_dir, task.media_roots) == task
    elsewhere = FileTask.from_dict({**data, "host": "another-host"}, task.thumbnail_dir, task.media_roots)
    assert elsewhere == replace(task, identity=None)

    result = FileResult(key=task.key, worker="host:1", stages=(StageReport("identify", None, 0.5),
                        StageReport("metadata", "bad EXIF", 0.1)), sha256="ab" * 32, item={"sha256": "ab" * 32})
    assert FileResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


def test_one_rule_says_where_a_files_stages_stop(tmp_path: Path) -> None:
    from dataclasses import replace

    from ingestapp.core.parameters import IngestParameters
    from ingestapp.work.protocol import FileTask, StageReport, stops_after

    task = FileTask(tmp_path / "a.jpg", "a.jpg", IngestParameters(directory=str(tmp_path)), tmp_path, None, None,
                    (tmp_path,), (), check_duplicates=True)
    asked: list[bool] = []

    def duplicate(answer: bool):
        return lambda: asked.append(answer) or answer

    assert stops_after(StageReport("metadata", "bad EXIF", 0.0), task, duplicate(False))  # a failed stage
    assert stops_after(StageReport("identify", None, 0.0), task, duplicate(True))  # a duplicate
    assert not stops_after(StageReport("identify", None, 0.0), task, duplicate(False))
    assert not stops_after(StageReport("metadata", None, 0.0), task, duplicate(True))  # asked after identify only
    no_check = replace(task, check_duplicates=False)
    assert not stops_after(StageReport("identify", None, 0.0), no_check, duplicate(True))
    assert asked == [True, False]


def test_idle_processes_go_round_robin_by_session() -> None:
    """Files of sessions a (three), b and c wait; five processes come free one by one: they go a, b,
    c, a, a, not to a's three files first. A file that gives up waiting takes none."""
    share: FairShare[int] = FairShare(poll=0.01)
    given: dict[int, str] = {}

    def wait(key: str, abandon=lambda: False) -> None:
        process = share.take(key, abandon)
        if process is not None:
            given[process] = key

    quitter = gevent.spawn(wait, "q", lambda: True)
    waiting = [gevent.spawn(wait, key) for key in "aaabc"]
    quitter.join(timeout=5)
    gevent.sleep(0)  # every file waits now
    for process in range(5):
        share.put(process)
    gevent.joinall(waiting, timeout=5)
    assert [given.get(process) for process in range(5)] == ["a", "b", "c", "a", "a"]


def test_a_small_session_is_not_stuck_behind_a_big_one(client, app: Flask, media: Path) -> None:
    """A 4-file session started while a 300-file one holds both stage processes gets its share of
    them (round robin by session): it completes while the big one still runs, far from its end."""
    write_jpegs(media / "big", 300, prefix="big")
    write_jpegs(media / "small", 4, prefix="small")
    registry = app.extensions["ingest_jobs"]
    registry.file_delay = 0.05  # the big session needs at least 7.5 s of the two processes
    big = start(client, media / "big")
    while registry.state(big)["processed_files"] < 4:  # it holds the pool
        gevent.sleep(0.01)
    small = start(client, media / "small")
    assert wait_for(app, small, {SessionStatus.COMPLETED})["processed_files"] == 4
    state = registry.state(big)
    assert state["status"] == SessionStatus.PROCESSING and state["processed_files"] < 150, state["processed_files"]
    assert client.post(f"/api/ingest/{big}/cancel", json={}).status_code == 202
    wait_for(app, big, {SessionStatus.CANCELLED})
