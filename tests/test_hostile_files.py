"""Hostile trees (issue 7, points 1, 2, 3 paths, 9): any name the OS allows, symlink loops and
escapes, files swapped after the scan, and path requests the filesystem refuses."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

import gevent
import pytest
from flask import Flask

from ingestapp.core.paths import printable
from ingestapp.work.pool import error_message as _message
from tests.factories import start, wait_for, write_jpeg
from tests.servers import SSEClient, gunicorn

#: File names as bytes (POSIX names are bytes), with the display form the app must show.
HOSTILE_NAMES = {
    b"a.jpg": "a.jpg",
    b"caf\xe9.jpg": "caf\\xe9.jpg",  # Latin-1, not UTF-8: shown as a \xe9 escape
    b"line\nfeed.jpg": "line\nfeed.jpg",
    b"carriage\rreturn.jpg": "carriage\rreturn.jpg",
    "line\u2028separator.jpg".encode(): "line\u2028separator.jpg",
    "next\u0085line.jpg".encode(): "next\u0085line.jpg",
    "rlo\u202egpj.exe.jpg".encode(): "rlo\u202egpj.exe.jpg",
    b"n" * 251 + b".jpg": "n" * 251 + ".jpg",  # 255 bytes: NAME_MAX
    b"\xff\xfedir/inner.jpg": "\\xff\\xfedir/inner.jpg",
    b"z.jpg": "z.jpg",
}


def write_named_jpeg(directory: Path, name: bytes, color: int) -> None:
    path = os.path.join(os.fsencode(directory), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_jpeg(Path(os.fsdecode(path)), color=(color, 40, 90))


def hostile_tree(media: Path, outside: Path) -> tuple[Path, dict[str, str]]:
    """``media/shoot`` with every hostile name and every kind of bad link; returns the chosen
    directory and the error entries expected (display path relative to the root -> message start)."""
    shoot = media / "shoot"
    for color, name in enumerate(HOSTILE_NAMES):
        write_named_jpeg(shoot, name, color)
    write_jpeg(media / "other" / "elsewhere.jpg", color=(250, 1, 1))  # inside the roots, outside shoot
    write_jpeg(outside / "secret.jpg", color=(1, 250, 1))
    links = shoot / "links"
    links.mkdir()
    (links / "up").symlink_to("..")  # a link to an ancestor
    (links / "self").symlink_to("self")  # a self link
    (links / "ping").symlink_to("pong")  # a two-link cycle
    (links / "pong").symlink_to("ping")
    (links / "dangling.jpg").symlink_to("missing.jpg")
    (shoot / "here").symlink_to(".")  # a loop at the top of the chosen directory
    (shoot / "root").symlink_to(media)  # the root above the chosen directory: a loop too
    (shoot / "outside").symlink_to(outside)
    (shoot / "outside.jpg").symlink_to(outside / "secret.jpg")
    (shoot / "other").symlink_to(media / "other")  # followed: inside the roots
    (shoot / "again").symlink_to(media / "other")  # the same directory: scanned once
    (shoot / "alias.jpg").symlink_to("a.jpg")  # a file link inside the roots: ingested
    expected_errors = {
        "shoot/links/up": "symbolic link loop",
        "shoot/links/self": "symbolic link loop",
        "shoot/links/ping": "symbolic link loop",
        "shoot/links/pong": "symbolic link loop",
        "shoot/links/dangling.jpg": "dangling symbolic link",
        "shoot/here": "symbolic link loop",
        "shoot/root": "symbolic link loop",
        "shoot/outside": "symbolic link leads outside the media roots",
        "shoot/outside.jpg": "symbolic link leads outside the media roots",
    }
    return shoot, expected_errors


def expected_items() -> set[str]:
    return {"shoot/" + shown for shown in HOSTILE_NAMES.values()} | {
        "shoot/alias.jpg",
        "shoot/again/elsewhere.jpg",  # "again" sorts before "other": the first link scans it
    }


def test_hostile_tree_through_gunicorn(tmp_path: Path, media: Path) -> None:
    """Every file is ingested once under its display name, each bad link is one error entry, the
    stream stays well framed, thumbnails, commit and catalog work, the database has the bytes."""
    outside = tmp_path / "outside"
    shoot, expected_errors = hostile_tree(media, outside)
    instance = tmp_path / "instance"
    with gunicorn(instance, media, {"INGEST_FILE_DELAY": "0.01"}) as server:
        status, body = server.request(
            "POST", "/api/ingest/process", {"directory": str(shoot), "enable_nsfw_detection": False,
                                            "skip_duplicates": False},
        )
        assert status == 202, body
        session_id = body["session_id"]
        # Last-Event-ID 0: every event from the first (without it the stream starts at a snapshot).
        client = SSEClient(server.port, f"/api/ingest/stream/{session_id}", {"Last-Event-ID": "0"})
        file_events, error_events = [], []
        try:
            for frame in client.frames():
                # Framing: only LF separates lines; JSON escapes CR, LF, U+2028 and U+0085.
                assert b"\r" not in frame and "\u2028".encode() not in frame and "\u0085".encode() not in frame
                fields = dict(line.split(": ", 1) for line in frame.decode().split("\n") if not line.startswith(":"))
                assert set(fields) <= {"id", "event", "data", "retry"}, frame
                if "data" not in fields:
                    continue
                data = json.loads(fields["data"])
                file_events += [data["path"]] if fields["event"] == "file" else []
                error_events += [data["file"]] if fields["event"] == "error" else []
                if fields["event"] in ("complete", "failed", "cancelled"):
                    assert fields["event"] == "complete", data
                    break
        finally:
            client.close()

        assert sorted(file_events) == sorted(expected_items())
        assert sorted(error_events) == sorted(expected_errors)  # each offending link exactly once
        status, state = server.request("GET", f"/api/ingest/status/{session_id}")
        assert state["status"] == "completed" and state["total_files"] == len(expected_items())
        messages = {e["file"]: e["message"] for e in state["errors"]}
        for file, start_of_message in expected_errors.items():
            assert messages[file].startswith(start_of_message), (file, messages[file])
        assert not any(str(tmp_path) in e["message"] for e in state["errors"])

        status, page = server.request("GET", f"/api/ingest/{session_id}/items?limit=500")
        items = {item["path"]: item for item in page["items"]}
        assert set(items) == expected_items()
        assert all(item["status"] == "ok" for item in items.values()), items
        for item in items.values():
            status, thumbnail = server.request("GET", item["thumbnail_url"])
            assert status == 200 and thumbnail[:2] == b"\xff\xd8"

        status, result = server.request("POST", f"/api/ingest/{session_id}/commit", {})
        # alias.jpg has a.jpg's content: the catalog is unique by content, so one entry for both.
        assert status == 200 and (result["added"], result["updated"]) == (len(expected_items()) - 1, 1), result
        status, catalog = server.request("GET", "/api/catalog?limit=500")
        catalogued_paths = {entry["path"] for entry in catalog["items"]}
        assert expected_items() - catalogued_paths in ({"shoot/a.jpg"}, {"shoot/alias.jpg"})
        status, sessions = server.request("GET", "/api/ingest/sessions")
        assert sessions["sessions"][0]["directory"] == str(shoot)

        status, page = server.request("GET", f"/ingest/{session_id}")
        assert status == 200  # the page renders every hostile name

    with sqlite3.connect(instance / "ingestapp.sqlite3") as db:
        stored = dict(db.execute("SELECT path_bytes, path FROM items WHERE session_id = ?", (session_id,)))
        catalogued = {row[0] for row in db.execute("SELECT path_bytes FROM catalog")}
    for name, shown in HOSTILE_NAMES.items():
        assert stored[b"shoot/" + name] == "shoot/" + shown
        assert b"shoot/" + name in catalogued or name == b"a.jpg"


def test_a_bad_name_does_not_fail_resume(client, app_config: dict, app: Flask, media: Path) -> None:
    """Interrupted mid-way, the session resumes and finishes with every byte name exactly once,
    and a bad link the first run reported is not reported again."""
    for color, name in enumerate(HOSTILE_NAMES):
        write_named_jpeg(media, name, color)
    (media / "gone.jpg").symlink_to("missing.jpg")
    registry = app.extensions["ingest_jobs"]
    registry.file_delay = 0.1
    session_id = start(client, media)
    job = registry.jobs[session_id]
    while job.state.done_files < 3:
        gevent.sleep(0.01)
    job.greenlet.kill()  # what a shutdown does: the session becomes interrupted
    assert registry.state(session_id)["status"] == "interrupted"
    done_before = client.get(f"/api/ingest/{session_id}/items?limit=500").get_json()["total"]
    assert 3 <= done_before < len(HOSTILE_NAMES)

    registry.file_delay = 0
    assert client.post(f"/api/ingest/{session_id}/resume", json={}).status_code == 202
    state = wait_for(app, session_id, {"completed"})
    assert [(e["file"], e["stage"]) for e in state["errors"]] == [("gone.jpg", "scanning")]
    assert state["stats"]["errors"] == 1
    paths = [i["path"] for i in client.get(f"/api/ingest/{session_id}/items?limit=500").get_json()["items"]]
    assert sorted(paths) == sorted(HOSTILE_NAMES.values())  # each once: resume matched the bytes


def test_a_file_swapped_after_the_scan_is_not_read(client, app: Flask, media: Path, tmp_path: Path) -> None:
    """A symlink (or a symlinked directory) swapped in between the scan and the open never leads
    outside the media roots: the stages refuse it and the other files are ingested."""
    outside = tmp_path / "outside"
    secret = write_jpeg(outside / "victim.jpg", color=(7, 7, 7))
    write_jpeg(outside / "sub" / "inner.jpg", color=(8, 8, 8))
    write_jpeg(media / "a.jpg", color=(1, 2, 3))
    write_jpeg(media / "sub" / "inner.jpg", color=(4, 5, 6))
    write_jpeg(media / "victim.jpg", color=(9, 9, 9))
    registry = app.extensions["ingest_jobs"]
    registry.file_delay = 0.3  # every file waits in the queue after the scan has listed it
    session_id = start(client, media, skip_duplicates=False)
    while registry.state(session_id)["stages"]["scanning"]["status"] != "completed":
        gevent.sleep(0.005)
    assert registry.state(session_id)["processed_files"] == 0  # nothing has been opened yet
    (media / "victim.jpg").unlink()
    (media / "victim.jpg").symlink_to(secret)  # the last component becomes a link
    (media / "sub").rename(tmp_path / "moved-sub")
    (media / "sub").symlink_to(outside / "sub")  # a directory on the way becomes a link

    state = wait_for(app, session_id, {"completed"})
    errors = {e["file"]: e["message"] for e in state["errors"]}
    assert errors == {
        "victim.jpg": "the file was replaced by a symbolic link after the scan: not read",
        "sub/inner.jpg": "the file was replaced after the scan (another file is at its path now): not read",
    }
    items = {i["path"]: i for i in client.get(f"/api/ingest/{session_id}/items").get_json()["items"]}
    assert items["a.jpg"]["status"] == "ok"
    assert items["victim.jpg"]["sha256"] is None and items["sub/inner.jpg"]["sha256"] is None


def test_failure_messages_name_paths_relative_to_the_media_root(media: Path) -> None:
    replacements = {"/proc/self/fd/7": "sub/x.jpg", str(media / "sub" / "x.jpg"): "sub/x.jpg"}
    assert _message(FileNotFoundError(2, "No such file or directory", str(media / "a.jpg")), {}, [media]) == (
        "No such file or directory"
    )
    assert _message(ValueError("cannot identify image file '/proc/self/fd/7'"), replacements, [media]) == (
        "cannot identify image file 'sub/x.jpg'"
    )
    assert _message(ValueError(f"bad sidecar {media}/sub/x.xmp\ndetails"), replacements, [media]) == (
        "bad sidecar sub/x.xmp"
    )
    assert _message(ValueError("name caf\udce9.jpg"), {}, [media]) == "name caf\\xe9.jpg"


def test_the_cli_escapes_what_a_terminal_would_interpret() -> None:
    assert printable("a\nb\u202ec\u2028d\x1b[2Jé日") == "a\\nb\\u202ec\\u2028d\\x1b[2Jé日"


@pytest.fixture
def path_server(tmp_path: Path, media: Path):
    (media / "loop1").symlink_to("loop2")
    (media / "loop2").symlink_to("loop1")
    (media / "self").symlink_to("self")
    os.mkdir(os.path.join(os.fsencode(media), b"caf\xe9"))
    write_jpeg(Path(os.fsdecode(os.path.join(os.fsencode(media), b"caf\xe9", b"x.jpg"))))
    with gunicorn(tmp_path / "instance", media) as server:
        yield server


def test_path_requests_the_filesystem_refuses_get_4xx_json(path_server, media: Path) -> None:
    long_name = str(media / ("a" * 300))  # a component over NAME_MAX (255)
    long_path = str(media) + "/a" * 2100  # over PATH_MAX (4096 bytes), within a request line
    bad_directories = [long_name, long_path, str(media / "loop1"), str(media / "self"), str(media / "self/x"),
                       str(media) + "/a\x00b"]
    for directory in bad_directories:
        status, body = path_server.request("POST", "/api/ingest/process", {"directory": directory})
        assert status == 400 and body["field"] == "directory" and body["error"], (directory[:80], status, body)
    # A lone surrogate that is no file name byte (PEP 383 uses U+DC80-U+DCFF) is not text: the body is refused.
    status, body = path_server.request("POST", "/api/ingest/process", {"directory": str(media) + "/\ud800"})
    assert status == 400 and "surrogate" in body["error"], body
    for path in [long_name, long_path, str(media / "loop1"), str(media / "self"), str(media) + "/a\x00b"]:
        status, body = path_server.request("GET", f"/api/ingest/browse?path={quote(path)}")
        assert 400 <= status < 500 and body["field"] == "path" and body["error"], (path[:80], status, body)

    status, listing = path_server.request("GET", f"/api/ingest/browse?path={quote(str(media))}")
    assert status == 200 and {d["name"] for d in listing["directories"]} == {"caf\\xe9"}
    # The lossless path (a lone surrogate escape in JSON) selects the byte-named directory, and
    # its bytes, percent-encoded as the page sends them, browse it.
    byte_dir = next(d["path"] for d in listing["directories"])
    status, inner = path_server.request("GET", f"/api/ingest/browse?path={quote(os.fsencode(byte_dir))}")
    assert status == 200 and inner["path"] == byte_dir and inner["directories"] == []
    status, body = path_server.request("POST", "/api/ingest/process", {"directory": byte_dir,
                                                                        "enable_nsfw_detection": False})
    assert status == 202, body
    state = path_server.wait_for_status(body["session_id"], {"completed", "failed"})
    assert state["status"] == "completed" and state["processed_files"] == 1
    status, items = path_server.request("GET", f"/api/ingest/{body['session_id']}/items")
    assert [i["path"] for i in items["items"]] == ["caf\\xe9/x.jpg"]


def test_a_sidecar_leading_outside_the_roots_is_not_read(client, app: Flask, media: Path, tmp_path: Path) -> None:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "tags.txt").write_text("secret")
    write_jpeg(media / "a.jpg")
    (media / "a.txt").symlink_to(tmp_path / "outside" / "tags.txt")
    write_jpeg(media / "b.jpg", color=(3, 3, 3))
    (media / "tags").mkdir()
    (media / "tags" / "real.txt").write_text("owl")
    (media / "b.txt").symlink_to(media / "tags" / "real.txt")
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed"})
    assert [(e["file"], e["stage"], e["message"]) for e in state["errors"]] == [
        ("a.jpg", "keywords", "sidecar a.txt leads outside the media roots: not read")
    ]
    items = {i["path"]: i for i in client.get(f"/api/ingest/{session_id}/items").get_json()["items"]}
    assert items["a.jpg"]["keywords"] == [] and items["b.jpg"]["keywords"] == ["owl"]
