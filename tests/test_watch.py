"""Watch folders (issue 20): a session that keeps ingesting its directory's new and changed files.

In-process tests (the app fixture; the watchdog observer runs in a native thread there) for the
rules; real gunicorn tests (tests/servers.py) for the stream, kill -9, the polling fallback, cancel
and auto-import.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest
from flask import Flask
from PIL import Image

from ingestapp.core.vocabulary import EventType, SessionStatus
from ingestapp.jobs.settle import FileStat, Settler
from tests import test_worktier
from tests.auth_support import prepare_instance
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, SignedInBrowser, require_chromium
from tests.factories import start, wait_for, write_jpegs
from tests.servers import GUNICORN, REPO, Server, SSEClient, gunicorn
from tests.services import lease_owner_pid

FLASK = GUNICORN.with_name("flask")

SETTLE = 1.0  # INGEST_WATCH_SETTLE of these tests (seconds)
# The work tier's fixtures (gunicorn, two workers, redis-server, PostgreSQL): this module's own tier.
running_tier, tier, folder = test_worktier.running_tier, test_worktier.tier, test_worktier.folder


def jpeg_bytes(label: str, size: tuple[int, int] = (320, 240)) -> bytes:
    """A JPEG unique by ``label`` (in its comment), big enough to be written in two halves."""
    out = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(out, "JPEG", quality=90, comment=label.encode())
    return out.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_slowly(path: Path, data: bytes, pause: float) -> None:
    """Half the bytes, a pause (shorter than the settle time), then the rest: one writer, open throughout."""
    with path.open("wb") as out:
        out.write(data[: len(data) // 2])
        out.flush()
        os.fsync(out.fileno())
        time.sleep(pause)
        out.write(data[len(data) // 2:])


def write_by_rename(path: Path, data: bytes) -> None:
    """As rsync does: a hidden temporary name in the same directory, then a rename."""
    temporary = path.with_name(f".{path.name}.XyZ123")
    temporary.write_bytes(data)
    os.rename(temporary, path)


def until(check: Callable[[], Any], timeout: float = 30, interval: float = 0.1, sleep: Callable = time.sleep) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        sleep(interval)
    raise TimeoutError(f"never true: {check}")


# -- settling (pure) -------------------------------------------------------------------------------


def test_settler_takes_a_file_only_after_its_stat_held_for_the_settle_time() -> None:
    settler = Settler(2.0)
    half, whole = FileStat(50, 1, 1, 7), FileStat(100, 2, 1, 7)
    settler.changed("a.jpg", 0.0)
    assert settler.due(0.0) == ["a.jpg"]
    assert not settler.checked("a.jpg", half, 0.1)  # first look: the window starts
    assert settler.due(1.0) == []
    settler.changed("a.jpg", 1.0)  # written again (inotify)
    assert not settler.checked("a.jpg", whole, 1.1)
    assert settler.due(2.5) == []
    assert not settler.checked("a.jpg", FileStat(100, 3, 1, 7), 3.2)  # mtime moved: a new window
    assert settler.due(4.0) == []
    assert settler.checked("a.jpg", FileStat(100, 3, 1, 7), 5.2)
    assert len(settler) == 0
    settler.changed("gone.jpg", 0.0)
    assert not settler.checked("gone.jpg", None, 0.1) and len(settler) == 0  # renamed away: forgotten


# -- in process ------------------------------------------------------------------------------------


@pytest.fixture
def app_config(app_config: dict) -> dict:
    return {**app_config, "WATCH_SETTLE": SETTLE, "WATCH_RESCAN": 300.0}


def items_of(client: Any, session_id: str) -> list[dict[str, Any]]:
    return client.get(f"/api/ingest/{session_id}/items?limit=500").get_json()["items"]


def test_watch_parameters_are_checked_like_any_session(client: Any, media: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    answer = client.post("/api/ingest/process", json={"directory": str(outside), "watch": True})
    assert answer.status_code == 403 and answer.get_json()["field"] == "directory"  # main: outside the roots is 403
    answer = client.post("/api/ingest/process", json={"directory": str(media), "auto_import": True})
    assert answer.status_code == 400 and answer.get_json()["field"] == "auto_import"
    answer = client.post("/api/ingest/process", json={"directory": str(media), "watch": True, "max_files": 3})
    assert answer.status_code == 400 and answer.get_json()["field"] == "max_files"
    answer = client.post("/api/ingest/process", json={"directory": str(media), "watch": "yes"})
    assert answer.status_code == 400 and answer.get_json()["field"] == "watch"


def test_new_changed_and_renamed_files_each_become_one_item(app: Flask, client: Any, media: Path) -> None:
    inbox = media / "inbox"
    write_jpegs(inbox, 2)
    session_id = start(client, inbox, watch=True)
    state = wait_for(app, session_id, {SessionStatus.WATCHING})
    assert state["watch"]["mode"] == "inotify" and state["processed_files"] == 2

    renamed, slow = jpeg_bytes("renamed"), jpeg_bytes("slow")
    write_by_rename(inbox / "renamed.jpg", renamed)
    gevent.get_hub().threadpool.apply(write_slowly, (inbox / "slow.jpg", slow, SETTLE / 2))
    (inbox / "notes.txt").write_text("not a media file: the pattern leaves it out")
    paths = lambda: sorted(item["path"] for item in items_of(client, session_id))  # noqa: E731
    expected = ["inbox/img_0000.jpg", "inbox/img_0001.jpg", "inbox/renamed.jpg", "inbox/slow.jpg"]
    until(lambda: paths() == expected, sleep=gevent.sleep)
    items = {item["path"]: item for item in items_of(client, session_id)}
    assert items["inbox/renamed.jpg"]["sha256"] == sha256(renamed)
    assert items["inbox/slow.jpg"]["sha256"] == sha256(slow)

    os.utime(inbox / "renamed.jpg")  # touched, same content: no new item
    changed = jpeg_bytes("changed")
    write_by_rename(inbox / "slow.jpg", changed)  # a new content for the path: its version 2
    until(lambda: len(items_of(client, session_id)) == 5, sleep=gevent.sleep)
    gevent.sleep(SETTLE * 2)
    slow_items = [item for item in items_of(client, session_id) if item["path"] == "inbox/slow.jpg"]
    assert sorted(item["sha256"] for item in slow_items) == sorted([sha256(slow), sha256(changed)])
    assert len(items_of(client, session_id)) == 5
    assert app.extensions["ingest_jobs"].state(session_id)["status"] == SessionStatus.WATCHING
    answer = client.post(f"/api/ingest/{session_id}/commit", json={})  # Import works while watching
    assert answer.status_code == 200 and answer.get_json()["added"] == 5

    assert client.post(f"/api/ingest/{session_id}/cancel", json={}).status_code == 202
    assert wait_for(app, session_id, {SessionStatus.CANCELLED})["processed_files"] == 5
    write_jpegs(inbox, 1, prefix="late")
    gevent.sleep(SETTLE * 2)
    assert len(items_of(client, session_id)) == 5


def test_a_watched_directory_that_disappears_fails_the_session_in_words(
    app: Flask, client: Any, media: Path
) -> None:
    inbox = media / "inbox"
    write_jpegs(inbox, 1)
    session_id = start(client, inbox, watch=True)
    wait_for(app, session_id, {SessionStatus.WATCHING})
    shutil.rmtree(inbox)
    state = wait_for(app, session_id, {SessionStatus.FAILED}, timeout=10)
    assert "the watched directory inbox disappeared" in state["message"]
    assert str(media) not in state["message"]


# -- real gunicorn ---------------------------------------------------------------------------------

WATCH_ENV = {"INGEST_WATCH_SETTLE": str(SETTLE), "INGEST_WORKERS": "2", "INGEST_JOB_LEASE": "2"}


def server_watch(server: Server, directory: Path, **parameters: Any) -> str:
    body = {"directory": str(directory), "enable_nsfw_detection": False, "watch": True, **parameters}
    status, answer = server.request("POST", "/api/ingest/process", body)
    assert status == 202, answer
    return answer["session_id"]


def server_items(server: Server, session_id: str) -> list[dict[str, Any]]:
    return server.request("GET", f"/api/ingest/{session_id}/items?limit=500")[1]["items"]


def hashes_by_path(items: list[dict[str, Any]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in items:
        found.setdefault(item["path"], []).append(item["sha256"])
    return {path: sorted(hashes) for path, hashes in found.items()}


@pytest.mark.server
def test_stream_of_a_watch_has_one_file_event_per_whole_file(tmp_path: Path, media: Path) -> None:
    inbox = media / "inbox"
    write_jpegs(inbox, 2)
    with gunicorn(tmp_path / "instance", media, WATCH_ENV) as server:
        session_id = server_watch(server, inbox)
        server.wait_for_status(session_id, {SessionStatus.WATCHING})
        stream = SSEClient(server.port, f"/api/ingest/stream/{session_id}?last_event_id=0")
        try:
            slow, renamed = jpeg_bytes("slow"), jpeg_bytes("renamed")
            def write() -> None:
                write_slowly(inbox / "slow.jpg", slow, SETTLE / 2)
                write_by_rename(inbox / "renamed.jpg", renamed)

            writer = gevent.get_hub().threadpool.spawn(write)
            files: list[dict[str, Any]] = []
            for event in stream.events():
                assert event["event"] in (EventType.PROGRESS, EventType.STAGE, EventType.FILE), event
                if event["event"] == EventType.FILE:
                    files.append(event["data"])
                if len(files) == 4:
                    break
            writer.get(timeout=10)
        finally:
            stream.close()
        assert sorted(f["path"] for f in files) == [
            "inbox/img_0000.jpg", "inbox/img_0001.jpg", "inbox/renamed.jpg", "inbox/slow.jpg"
        ]
        gevent.sleep(SETTLE * 2)  # nothing else comes: each file was taken once
        found = hashes_by_path(server_items(server, session_id))
        assert found["inbox/slow.jpg"] == [sha256(slow)] and found["inbox/renamed.jpg"] == [sha256(renamed)]
        assert len(found) == 4 and sum(map(len, found.values())) == 4
        state = server.request("GET", f"/api/ingest/status/{session_id}")[1]
        assert state["status"] == SessionStatus.WATCHING and state["watch"]["last_file_at"] is not None


@pytest.mark.server
def test_a_watch_survives_kill_9_and_finds_the_files_added_while_down(tmp_path: Path, media: Path) -> None:
    inbox = media / "inbox"
    write_jpegs(inbox, 2)
    instance = tmp_path / "instance"
    with gunicorn(instance, media, WATCH_ENV) as server:
        session_id = server_watch(server, inbox)
        server.wait_for_status(session_id, {SessionStatus.WATCHING})
        first = jpeg_bytes("before the crash")
        (inbox / "before.jpg").write_bytes(first)
        until(lambda: len(server_items(server, session_id)) == 3)
        server.kill_group()  # no shutdown code runs: the session still says watching
    added = {name: jpeg_bytes(name) for name in ("down-1.jpg", "down-2.jpg")}
    for name, data in added.items():
        (inbox / "sub" / name).parent.mkdir(exist_ok=True)
        (inbox / "sub" / name).write_bytes(data)
    changed = jpeg_bytes("changed while down")
    (inbox / "before.jpg").write_bytes(changed)

    with gunicorn(instance, media, WATCH_ENV) as server:
        until(lambda: len(server_items(server, session_id)) == 6, timeout=60)
        state = server.wait_for_status(session_id, {SessionStatus.WATCHING})
        found = hashes_by_path(server_items(server, session_id))
        assert found["inbox/sub/down-1.jpg"] == [sha256(added["down-1.jpg"])]
        assert found["inbox/sub/down-2.jpg"] == [sha256(added["down-2.jpg"])]
        assert found["inbox/before.jpg"] == sorted([sha256(first), sha256(changed)])  # the earlier one stays
        assert state["watch"]["mode"] == "inotify"
        late = jpeg_bytes("after the restart")
        (inbox / "late.jpg").write_bytes(late)
        until(lambda: hashes_by_path(server_items(server, session_id)).get("inbox/late.jpg") == [sha256(late)])

    # A clean stop (SIGTERM) leaves the watch interrupted; the next start-up restarts it by itself.
    stopped = jpeg_bytes("added while stopped")
    (inbox / "stopped.jpg").write_bytes(stopped)
    with gunicorn(instance, media, WATCH_ENV) as server:
        until(lambda: hashes_by_path(server_items(server, session_id)).get("inbox/stopped.jpg") == [sha256(stopped)])
        assert server.wait_for_status(session_id, {SessionStatus.WATCHING})["watch"]["mode"] == "inotify"


@pytest.mark.server
def test_polling_fallback_with_auto_import_and_cancel(tmp_path: Path, media: Path) -> None:
    inbox = media / "inbox"
    write_jpegs(inbox, 2)
    env = {**WATCH_ENV, "INGEST_WATCH_FAULT": "enospc", "INGEST_WATCH_POLL": "1"}
    with gunicorn(tmp_path / "instance", media, env) as server:
        session_id = server_watch(server, inbox, auto_import=True)
        state = server.wait_for_status(session_id, {SessionStatus.WATCHING})
        assert state["watch"]["mode"] == "polling"
        assert "inotify cannot watch this folder" in state["watch"]["warning"]
        assert "inotify cannot watch this folder" in server.log.read_text()
        until(lambda: server.request("GET", "/api/catalog?limit=100")[1]["total"] == 2)

        new = jpeg_bytes("polled")
        gevent.get_hub().threadpool.apply(write_slowly, (inbox / "polled.jpg", new, SETTLE / 2))
        until(lambda: server.request("GET", "/api/catalog?limit=100")[1]["total"] == 3)
        catalog = server.request("GET", "/api/catalog?limit=100")[1]
        assert sha256(new) in {entry["sha256"] for entry in catalog["items"]}
        state = until(lambda: (s := server.request("GET", f"/api/ingest/status/{session_id}")[1])["watch"]["imported"]
                      and s["watch"]["imported"]["added"] == 3 and s)
        assert state["status"] == SessionStatus.WATCHING

        assert server.request("POST", f"/api/ingest/{session_id}/cancel", {})[0] == 202
        server.wait_for_status(session_id, {SessionStatus.CANCELLED}, timeout=15)
        (inbox / "after-cancel.jpg").write_bytes(jpeg_bytes("after the cancel"))
        time.sleep(SETTLE * 3)
        assert len(server_items(server, session_id)) == 3
        assert server.request("GET", "/api/catalog?limit=100")[1]["total"] == 3


def test_cli_watch_ingests_new_files_until_ctrl_c(tmp_path: Path) -> None:
    inbox = tmp_path / "card-import"  # the CLI may watch a directory outside the media roots
    write_jpegs(inbox, 1)
    instance = tmp_path / "instance"
    prepare_instance(instance)
    env = {**os.environ, "INGEST_INSTANCE_PATH": str(instance), "INGEST_WATCH_SETTLE": str(SETTLE),
           "INGEST_WORKERS": "1"}
    command = [str(FLASK), "--app", "ingestapp", "ingest", "watch", str(inbox), "--no-nsfw", "--auto-import", "--json"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        session_id = process.stderr.readline().strip().rpartition("/")[2]  # "session: <url>"
        database = instance / "ingestapp.sqlite3"

        def catalog_size() -> int:
            with sqlite3.connect(database) as conn:
                return conn.execute("SELECT count(*) FROM catalog").fetchone()[0]

        until(lambda: catalog_size() == 1)
        new = jpeg_bytes("from the card")
        write_by_rename(inbox / "new.jpg", new)
        until(lambda: catalog_size() == 2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    state = json.loads(out)
    assert state["session_id"] == session_id and state["status"] == SessionStatus.CANCELLED
    assert state["processed_files"] == 2 and state["watch"]["imported"]["added"] == 2
    with sqlite3.connect(database) as conn:
        assert sha256(new) in {row[0] for row in conn.execute("SELECT sha256 FROM catalog")}


@pytest.mark.server
def test_the_page_starts_a_watch_and_shows_it(tmp_path: Path, media: Path) -> None:
    """The form's checkbox starts a watch; the session page says Watching, with the last file's
    time, and its review's Import N grows; Cancel stops it."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    inbox = media / "inbox"
    write_jpegs(inbox, 2)
    with gunicorn(tmp_path / "instance", media, WATCH_ENV) as server, sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            browser = SignedInBrowser(launched, f"http://127.0.0.1:{server.port}", server.username, server.password)
            page = browser.new_context().new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{server.port}/")
            page.fill("#directory", str(inbox))
            page.uncheck("#enable_nsfw_detection")
            page.get_by_label("Keep watching this folder", exact=True).check()
            page.get_by_role("button", name="Start").click()
            page.wait_for_url("**/ingest/*")
            page.wait_for_function("() => document.getElementById('status').textContent === 'Watching'")
            page.wait_for_function("() => document.getElementById('import').textContent === 'Import 2'")
            assert "last file: none yet" in page.text_content("#watch-line")
            assert page.text_content("#lead-text") == "— 2 files ingested"  # status first: what it took in
            assert page.get_by_role("button", name="Cancel").is_visible()

            write_by_rename(inbox / "new.jpg", jpeg_bytes("seen on the page"))
            page.wait_for_function("() => document.getElementById('import').textContent === 'Import 3'", timeout=20_000)
            page.wait_for_function("() => !document.getElementById('watch-line').textContent.includes('none yet')")
            assert "with inotify" in page.text_content("#watch-line")
            page.wait_for_function("() => document.getElementById('lead-text').textContent.startsWith("
                                   "'— 3 files ingested, last file ')")
            assert re.fullmatch(r"— 3 files ingested, last file \d\d:\d\d:\d\d", page.text_content("#lead-text"))
            page.reload()  # the server renders the same header (web/pages.py lead_text)
            assert re.fullmatch(r"— 3 files ingested, last file \d\d:\d\d:\d\d", page.text_content("#lead-text"))
            assert page.text_content("#status") == "Watching"

            page.get_by_role("button", name="Cancel").click()
            page.wait_for_function("() => document.getElementById('status').textContent === 'Cancelled'")
            assert page.locator("#watch-line").is_hidden()
            assert errors == []
            browser.check_csp()
        finally:
            launched.close()


@pytest.mark.server
def test_with_a_work_tier_one_worker_holds_the_watch_and_another_takes_over(tier: dict, folder: Path) -> None:
    """The watch runs in one ``flask worker`` (its lease); kill -9 that worker and the other one
    watches on by itself, until it is cancelled."""
    server, workers = tier["server"], tier["workers"]
    inbox = folder / "inbox"
    relpath = lambda name: str((inbox / name).relative_to(tier["media"]))  # noqa: E731  items' path
    write_jpegs(inbox, 2)
    session_id = server_watch(server, inbox)
    server.wait_for_status(session_id, {SessionStatus.WATCHING})
    pids = {worker.process.pid: worker for worker in workers}
    holder = pids[lease_owner_pid(tier["database"], session_id)]
    added = {f"new-{i}.jpg": jpeg_bytes(f"tier {i}") for i in range(4)}
    for name, data in added.items():
        write_by_rename(inbox / name, data)
    until(lambda: len(server_items(server, session_id)) == 6, timeout=60)
    assert {item["worker"] for item in server_items(server, session_id)} <= {worker.name for worker in workers}

    holder.process.kill()  # SIGKILL: its lease expires, and the watch restarts on the other worker
    holder.process.wait()
    late = jpeg_bytes("after the takeover")
    (inbox / "late.jpg").write_bytes(late)
    late_recorded = lambda: hashes_by_path(server_items(server, session_id)).get(relpath("late.jpg"))  # noqa: E731
    until(lambda: late_recorded() == [sha256(late)], timeout=90)
    assert lease_owner_pid(tier["database"], session_id) != holder.process.pid
    assert server.wait_for_status(session_id, {SessionStatus.WATCHING})
    found = hashes_by_path(server_items(server, session_id))
    assert all(found[relpath(name)] == [sha256(data)] for name, data in added.items())
    assert sum(map(len, found.values())) == 7
    # The tier is the module's: the watch ends here, not in its teardown.
    assert server.request("POST", f"/api/ingest/{session_id}/cancel", {})[0] == 202
    server.wait_for_status(session_id, {SessionStatus.CANCELLED})
