"""The JSON API: malformed input gets a 400 {error, field}, a well-formed request for a directory
outside the media roots a 403 {error, field}; sessions, items, commit, catalog."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gevent
import pytest
from sqlalchemy import text, update

from ingestapp.stages.base import new_item_fields
from ingestapp.store.models import Item
from tests.auth_support import prepare_instance
from tests.factories import hoard_sidecar, hub_lags, start, wait_for, write_jpeg, write_jpegs


def post(client, url, body, **kwargs):
    return client.post(url, json=body, **kwargs)


@pytest.mark.parametrize(
    ("parameters", "field"),
    [
        ({}, "directory"),
        ({"directory": ""}, "directory"),
        ({"directory": "relative/dir"}, "directory"),
        ({"directory": 42}, "directory"),
        ({"directory": "{media}/missing"}, "directory"),
        ({"directory": "{media}/file.jpg"}, "directory"),
        ({"directory": "{media}/a\x00b"}, "directory"),
        ({"directory": "{media}", "nsfw_threshold": 1.5}, "nsfw_threshold"),
        ({"directory": "{media}", "nsfw_threshold": -0.1}, "nsfw_threshold"),
        ({"directory": "{media}", "nsfw_threshold": "0.5"}, "nsfw_threshold"),
        ({"directory": "{media}", "nsfw_threshold": True}, "nsfw_threshold"),
        ({"directory": "{media}", "max_files": 0}, "max_files"),
        ({"directory": "{media}", "max_files": 2.5}, "max_files"),
        ({"directory": "{media}", "max_files": "10"}, "max_files"),
        ({"directory": "{media}", "pattern": ""}, "pattern"),
        ({"directory": "{media}", "pattern": "*.jpg,,*.png"}, "pattern"),
        ({"directory": "{media}", "pattern": "[abc.jpg"}, "pattern"),
        ({"directory": "{media}", "pattern": "../*.jpg"}, "pattern"),
        ({"directory": "{media}", "pattern": 7}, "pattern"),
        ({"directory": "{media}", "pattern": "a]b[.jpg"}, "pattern"),  # brackets balanced in count only
        ({"directory": "{media}", "pattern": "*.jpg\x01"}, "pattern"),  # a control character
        ({"directory": "{media}", "extract_metadata": "yes"}, "extract_metadata"),
        ({"directory": "{media}", "skip_duplicates": 1}, "skip_duplicates"),
        ({"directory": "{media}", "colour": "blue"}, "colour"),
    ],
)
def test_bad_parameters_get_400_with_field(client, media: Path, parameters: dict, field: str) -> None:
    write_jpeg(media / "file.jpg")
    body = {k: v.format(media=media) if isinstance(v, str) else v for k, v in parameters.items()}
    response = post(client, "/api/ingest/process", {"parameters": body})
    assert response.status_code == 400
    assert response.get_json()["field"] == field
    assert response.get_json()["error"]


def test_flat_body_is_accepted(client, media: Path) -> None:
    response = post(client, "/api/ingest/process", {"directory": str(media), "enable_nsfw_detection": False})
    assert response.status_code == 202
    data = response.get_json()
    assert set(data) == {"session_id", "status_url", "stream_url"}
    assert len(data["session_id"]) >= 22  # 128 random bits, URL-safe base64
    assert data["stream_url"] == f"/api/ingest/stream/{data['session_id']}"


def test_body_that_is_not_json_or_not_an_object(client, media: Path) -> None:
    response = client.post("/api/ingest/process", data="{not json", content_type="application/json")
    assert response.status_code == 400 and response.get_json()["field"] is None
    response = post(client, "/api/ingest/process", [1, 2])
    assert response.status_code == 400 and response.get_json()["field"] is None
    response = post(client, "/api/ingest/process", {"parameters": "x"})
    assert response.status_code == 400 and response.get_json()["field"] == "parameters"


def test_state_changes_need_json_and_same_origin(client, media: Path) -> None:
    body = {"directory": str(media)}
    response = client.post("/api/ingest/process", data=body)  # a form post
    assert response.status_code == 415
    response = post(client, "/api/ingest/process", body, headers={"Origin": "https://evil.example"})
    assert response.status_code == 403 and response.get_json()["field"] == "Origin"
    response = post(client, "/api/ingest/process", body, headers={"Origin": "http://localhost"})
    assert response.status_code == 202


@pytest.mark.parametrize("directory", ["/etc", "{media}/../", "{outside}", "{media}/link", "{media}/link/deeper"])
def test_a_directory_outside_the_media_roots_is_403(client, media: Path, tmp_path: Path, directory: str) -> None:
    """Well-formed but not allowed: outside the roots, or inside them only by name (a symlink that
    resolves outside). A 403 naming the field, flat or wrapped, and no session is started."""
    outside = tmp_path / "outside"
    write_jpeg(outside / "deeper" / "secret.jpg")
    os.symlink(outside, media / "link")
    named = directory.format(media=media, outside=outside)
    for body in ({"directory": named}, {"parameters": {"directory": named}}):
        response = post(client, "/api/ingest/process", body)
        assert response.status_code == 403, (named, response.get_json())
        assert response.get_json() == {"error": "directory is outside the configured media roots",
                                       "field": "directory"}
    assert client.get("/api/ingest/sessions").get_json()["sessions"] == []


@pytest.mark.parametrize("path", ["/etc", "{media}/..", "{outside}", "{media}/link", "{media}/link/deeper"])
def test_a_browse_path_outside_the_media_roots_is_403(client, media: Path, tmp_path: Path, path: str) -> None:
    outside = tmp_path / "outside"
    (outside / "deeper" / "hidden").mkdir(parents=True)
    os.symlink(outside, media / "link")
    response = client.get("/api/ingest/browse", query_string={"path": path.format(media=media, outside=outside)})
    assert response.status_code == 403
    assert response.get_json() == {"error": "path is outside the configured media roots", "field": "path"}


@pytest.mark.parametrize(
    ("query", "field"),
    [({}, "path"), ({"path": ""}, "path"), ({"path": "relative/dir"}, "path"), ({"path": "{media}/a\x00b"}, "path")],
)
def test_a_malformed_browse_path_is_400(client, media: Path, query: dict, field: str) -> None:
    """Malformed stays 400, even when it names nothing outside the roots."""
    response = client.get("/api/ingest/browse", query_string={k: v.format(media=media) for k, v in query.items()})
    assert response.status_code == 400 and response.get_json()["field"] == field and response.get_json()["error"]


def test_malformed_input_is_400_before_the_directory_is_judged(client, media: Path) -> None:
    """A body that is malformed anywhere is a 400, even when its directory is also outside the roots."""
    for body in ({"directory": "/etc", "colour": "blue"}, {"directory": "/etc", "max_files": "10"},
                 {"directory": 42}, {"directory": "etc"}, {"directory": "/etc\x00"}):
        response = post(client, "/api/ingest/process", body)
        assert response.status_code == 400, (body, response.get_json())
        assert set(response.get_json()) == {"error", "field"}


def test_symlinked_file_escaping_the_root_is_not_ingested(client, app, media: Path, tmp_path: Path) -> None:
    write_jpeg(tmp_path / "outside" / "secret.jpg")
    write_jpeg(media / "inside.jpg")
    os.symlink(tmp_path / "outside" / "secret.jpg", media / "escape.jpg")
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed"})
    assert state["total_files"] == 1


def test_unknown_ids_are_404_json(client) -> None:
    for url in ("/api/ingest/status/nope", "/api/ingest/nope/items", "/api/ingest/stream/nope",
                "/api/ingest/items/nope/thumbnail"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.is_json and response.get_json()["error"]
    assert post(client, "/api/ingest/nope/cancel", {}).status_code == 404
    assert post(client, "/api/ingest/nope/resume", {}).status_code == 404


def test_full_state_shape_and_items(client, app, media: Path) -> None:
    write_jpegs(media / "sub", 3)
    (media / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    session_id = start(client, media)
    state = wait_for(app, session_id, {"completed"})
    assert state["progress_percent"] == 100.0
    assert state["total_files"] == 4 and state["processed_files"] == 4
    assert state["stats"]["errors"] == 1 and state["errors"][0]["file"] == "broken.jpg"
    assert set(state["stages"]) == {"scanning", "identify", "metadata", "keywords", "scores", "thumbnail"}
    assert all(stage["status"] == "completed" for stage in state["stages"].values())
    assert set(state["worker_pool"]) == {"active", "max", "queue_depth"}
    assert set(state["timing"]) == {"started_at", "elapsed_ms", "files_per_s", "estimated_remaining_ms"}
    assert state["last_event_id"] > 0

    page = client.get(f"/api/ingest/{session_id}/items", query_string={"limit": 2}).get_json()
    assert page["total"] == 4 and len(page["items"]) == 2
    rest = client.get(f"/api/ingest/{session_id}/items", query_string={"offset": 2}).get_json()["items"]
    items = page["items"] + rest
    assert [i["path"] for i in items] == ["broken.jpg", "sub/img_0000.jpg", "sub/img_0001.jpg", "sub/img_0002.jpg"]
    broken, good = items[0], items[1]
    assert broken["status"] == "error" and broken["errors"][0]["stage"] == "identify"
    assert good["status"] == "ok" and good["mime_type"] == "image/jpeg" and len(good["sha256"]) == 64
    thumb = client.get(good["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert client.get(f"/api/ingest/{session_id}/items", query_string={"limit": 0}).status_code == 400


def test_commit_is_idempotent_and_updates_by_hash(client, app, media: Path) -> None:
    write_jpegs(media, 3)
    first = start(client, media)
    wait_for(app, first, {"completed"})
    items = client.get(f"/api/ingest/{first}/items").get_json()["items"]
    excluded = items[0]["id"]
    result = post(client, f"/api/ingest/{first}/commit", {"exclude": [excluded]}).get_json()
    assert result == {"added": 2, "updated": 0, "excluded": 1}
    assert post(client, f"/api/ingest/{first}/commit", {"exclude": [excluded]}).get_json()["added"] == 0
    assert client.get("/api/catalog").get_json()["total"] == 2

    # The same files again, duplicates not skipped: committing updates the entries, never doubles them.
    second = start(client, media, skip_duplicates=False)
    wait_for(app, second, {"completed"})
    result = post(client, f"/api/ingest/{second}/commit", {}).get_json()
    assert result == {"added": 1, "updated": 2, "excluded": 0}
    assert client.get("/api/catalog").get_json()["total"] == 3

    response = post(client, f"/api/ingest/{second}/commit", {"exclude": "all"})
    assert response.status_code == 400 and response.get_json()["field"] == "exclude"


# Timing-bound (a hub-lag bound), so it runs alone (``make test``'s serial part).
@pytest.mark.serial
@pytest.mark.sqlite_only
def test_hub_keeps_turning_while_a_big_session_is_committed(client, app) -> None:
    """Issue 16, point 2: a 10,000-item commit (seconds of work; it used to hold the hub for all of
    them) runs off the hub in short transactions. A ticker greenlet never waits long, a writer
    greenlet (a job's group commit, in between the commit's chunks) keeps committing, and the
    result is the whole session, once."""
    from ingestapp.store import db
    from tests.big_session import add_finished_session

    engine = app.extensions["ingest_db"]
    session_id = add_finished_session(engine, 10_000)
    writes: list[float] = []
    running = True

    def writer() -> None:  # what a running job's writer does every few ms
        while running:
            before = time.perf_counter()
            with db.begin(engine) as conn:
                conn.execute(text("UPDATE users SET created_at = created_at"))
            writes.append(time.perf_counter() - before)
            gevent.sleep(0.01)

    writing = gevent.spawn(writer)
    started = time.perf_counter()
    try:
        with hub_lags() as lags:
            result = post(client, f"/api/ingest/{session_id}/commit", {}).get_json()
    finally:
        took = time.perf_counter() - started
        running = False
        writing.join()
    assert result == {"added": 10_000, "updated": 0, "excluded": 0}
    assert client.get("/api/catalog?limit=1").get_json()["total"] == 10_000
    print(f"commit {took:.1f} s; hub lag over {len(lags)} ticks: max {max(lags) * 1000:.1f} ms; "
          f"{len(writes)} writes, slowest {max(writes) * 1000:.1f} ms")
    assert len(lags) > took / 0.05, "the ticker hardly ran: the hub was held"
    assert max(lags) < 0.1, f"hub blocked: {lags.worst()}"
    assert len(writes) > took / 0.1, "the writer could not get between the commit's transactions"
    assert max(writes) < 0.25, f"a write waited {max(writes) * 1000:.0f} ms for the commit"


def test_skip_duplicates_skips_catalogued_and_repeated_content(client, app, media: Path) -> None:
    write_jpegs(media, 2)
    (media / "copy.jpg").write_bytes((media / "img_0000.jpg").read_bytes())
    first = start(client, media)
    state = wait_for(app, first, {"completed"})
    assert state["stats"]["skipped_duplicates"] == 1
    assert state["processed_files"] + state["stats"]["skipped_duplicates"] == state["total_files"] == 3
    post(client, f"/api/ingest/{first}/commit", {})
    second = start(client, media)
    state = wait_for(app, second, {"completed"})
    assert state["stats"]["skipped_duplicates"] == 3 and state["processed_files"] == 0


def test_catalog_filters(client, app, media: Path) -> None:
    write_jpeg(media / "a.jpg", color=(1, 2, 3))
    (media / "a.txt").write_text("beach, sunset")
    write_jpeg(media / "b.jpg", color=(4, 5, 6))
    (media / "b.txt").write_text("mountain")
    session_id = start(client, media)
    wait_for(app, session_id, {"completed"})
    post(client, f"/api/ingest/{session_id}/commit", {})
    beach = client.get("/api/catalog", query_string={"keyword": "beach"}).get_json()
    assert beach["total"] == 1 and beach["items"][0]["path"] == "a.jpg"
    assert beach["items"][0]["keywords"] == ["beach", "sunset"]
    assert client.get("/api/catalog", query_string={"min_rating": 1}).get_json()["total"] == 0
    assert client.get("/api/catalog", query_string={"min_rating": 9}).status_code == 400
    assert client.get("/api/catalog", query_string={"nsfw": "maybe"}).status_code == 400


def test_roots_and_browse(client, media: Path) -> None:
    (media / "photos" / "2024").mkdir(parents=True)
    (media / ".hidden").mkdir()
    write_jpeg(media / "photos" / "a.jpg")
    (media / "photos" / "notes.txt").write_text("not media")
    roots = client.get("/api/ingest/roots").get_json()["roots"]
    assert roots == [{"name": "media", "path": str(media)}]
    listing = client.get("/api/ingest/browse", query_string={"path": str(media)}).get_json()
    assert listing["parent"] is None
    assert listing["directories"] == [{"name": "photos", "path": str(media / "photos"), "media_count": 1}]
    sub = client.get("/api/ingest/browse", query_string={"path": str(media / "photos")}).get_json()
    assert sub["parent"] == str(media) and sub["directories"][0]["name"] == "2024"
    assert client.get("/api/ingest/browse", query_string={"path": "/etc"}).status_code == 403  # not allowed
    assert client.get("/api/ingest/browse", query_string={"path": "rel"}).status_code == 400


def test_sessions_newest_first(client, app, media: Path) -> None:
    write_jpegs(media, 1)
    first = start(client, media)
    wait_for(app, first, {"completed"})
    second = start(client, media, skip_duplicates=False)
    wait_for(app, second, {"completed"})
    sessions = client.get("/api/ingest/sessions").get_json()["sessions"]
    assert [s["session_id"] for s in sessions] == [second, first]
    assert sessions[0]["status"] == "completed" and sessions[0]["directory"] == str(media)


def test_review_keeps_exclusions_and_remembers_the_import(client, app, media: Path) -> None:
    write_jpegs(media, 3)
    (media / "broken.jpg").write_bytes(b"not a jpeg")
    session_id = start(client, media)
    wait_for(app, session_id, {"completed"})
    stages = client.get(f"/api/ingest/status/{session_id}").get_json()["stages"]
    assert (stages["identify"]["errors"], stages["identify"]["skipped"]) == (1, 0)  # filed where it was raised
    assert (stages["thumbnail"]["errors"], stages["thumbnail"]["skipped"]) == (0, 1)  # and not run after it
    review = client.get(f"/api/ingest/{session_id}/review").get_json()
    assert review["counts"] == {"all": 4, "new": 3, "duplicates": 0, "errors": 1, "nsfw": 0}
    assert review["import_count"] == 3 and review["import_offered"] and review["imported"] is None
    errors = client.get(f"/api/ingest/{session_id}/items", query_string={"view": "errors"}).get_json()
    assert [item["path"] for item in errors["items"]] == ["broken.jpg"] and errors["total"] == 1
    assert client.get(f"/api/ingest/{session_id}/items", query_string={"view": "odd"}).get_json()["field"] == "view"

    first = client.get(f"/api/ingest/{session_id}/items", query_string={"view": "new"}).get_json()["items"][0]
    url = f"/api/ingest/{session_id}/exclusions"
    review = post(client, url, {"excluded": True, "ids": [first["id"]]}).get_json()
    assert review["excluded"] == 1 and review["import_count"] == 2
    items = client.get(f"/api/ingest/{session_id}/items").get_json()["items"]  # kept server-side
    assert [item["excluded"] for item in items if item["id"] == first["id"]] == [True]

    assert post(client, f"/api/ingest/{session_id}/commit", {}).get_json() == {"added": 2, "updated": 0, "excluded": 1}
    review = client.get(f"/api/ingest/{session_id}/review").get_json()
    assert not review["import_offered"]
    assert review["imported"]["added"] == 2 and review["imported"]["excluded"] == 1 and review["imported"]["at"] > 0
    listed = client.get("/api/ingest/sessions").get_json()["sessions"][0]
    assert listed["commit_result"] == {"added": 2, "updated": 0, "excluded": 1}

    review = post(client, url, {"excluded": False, "view": "all"}).get_json()  # something changed
    assert review["excluded"] == 0 and review["import_offered"]
    for body, field in (({"excluded": "yes", "view": "all"}, "excluded"), ({"excluded": True}, "ids"),
                        ({"excluded": True, "ids": "x"}, "ids"), ({"excluded": True, "view": "odd"}, "view")):
        response = post(client, url, body)
        assert response.status_code == 400 and response.get_json()["field"] == field, body


def test_catalog_search_ignores_case_and_matches_substrings(client, app, media: Path) -> None:
    write_jpeg(media / "Holidays" / "Pine_Forest.jpg", color=(1, 2, 3))
    (media / "Holidays" / "Pine_Forest.txt").write_text("Pine, owl")
    write_jpeg(media / "city" / "b.jpg", color=(4, 5, 6))
    (media / "city" / "b.txt").write_text("mountain")
    session_id = start(client, media)
    wait_for(app, session_id, {"completed"})
    post(client, f"/api/ingest/{session_id}/commit", {})

    def paths(**args: str) -> list[str]:
        return [item["path"] for item in client.get("/api/catalog", query_string=args).get_json()["items"]]

    for q in ("pine", "PINE", "fores", "ow", "holidays pine", "OWL"):
        assert paths(q=q) == ["Holidays/Pine_Forest.jpg"], q
    assert paths(q="pine mountain") == [] and paths(q='"x') == [] and paths(q="100%") == []
    assert paths(keyword="pine") == ["Holidays/Pine_Forest.jpg"]
    assert sorted(paths(media_type="image", sort="rating")) == ["Holidays/Pine_Forest.jpg", "city/b.jpg"]
    assert paths(has_gps="true") == [] and paths(media_type="video") == []
    assert paths(taken_to="2000-01-01") == []  # no date taken: outside every range
    for args, field in (({"sort": "size"}, "sort"), ({"taken_from": "yesterday"}, "taken_from"),
                        ({"media_type": "gif"}, "media_type"), ({"has_gps": "1"}, "has_gps")):
        response = client.get("/api/catalog", query_string=args)
        assert response.status_code == 400 and response.get_json()["field"] == field, args
    suggestions = client.get("/api/catalog/keywords", query_string={"prefix": "p"}).get_json()
    assert suggestions == {"keywords": ["Pine"]}
    assert client.get("/api/catalog/keywords", query_string={"prefix": "%"}).get_json() == {"keywords": []}


def test_keyword_caps_hold_from_the_sidecar_to_the_catalog_page(client, app, media: Path) -> None:
    """Issue 16, point 3: 400,000 keywords in a sidecar become an ok item of 500 with a warning;
    the job goes on; the catalog lists an entry's first 50 keywords ("+450 more"), so a page stays
    small; an item recorded uncapped (an earlier release) is capped by the commit, with a warning."""
    write_jpeg(media / "hoard.jpg", color=(1, 2, 3))
    hoard_sidecar(media / "hoard.xmp", ["tag" * 333 + "!", *(f"keyword {n}" for n in range(400_000))])
    write_jpeg(media / "plain.jpg", color=(4, 5, 6))
    session_id = start(client, media)
    wait_for(app, session_id, {"completed"}, timeout=120)
    items = {item["path"]: item for item in client.get(f"/api/ingest/{session_id}/items").get_json()["items"]}
    hoard, plain = items["hoard.jpg"], items["plain.jpg"]
    assert hoard["status"] == plain["status"] == "ok" and plain["warnings"] == []
    assert len(hoard["keywords"]) == 500 and max(map(len, hoard["keywords"])) == 200
    warning = "kept 500 of 400,001 keywords; 1 keyword over 200 characters was shortened"
    assert hoard["warnings"] == [warning]

    engine = app.extensions["ingest_db"]
    with engine.begin() as conn:  # as an earlier release recorded it: 600 keywords, no warnings
        fields = {key: value for key, value in plain.items() if key in new_item_fields() and key != "warnings"}
        fields["keywords"] = [f"old {n}" for n in range(600)]
        conn.execute(update(Item).where(Item.id == plain["id"]).values(fields=fields))
    assert post(client, f"/api/ingest/{session_id}/commit", {}).get_json()["added"] == 2

    def entry(keyword: str) -> dict:
        found = client.get("/api/catalog", query_string={"keyword": keyword}).get_json()["items"]
        assert len(found) == 1, keyword
        return found[0]

    hoarded = entry("keyword 498")  # the last one kept: the filter finds an entry by any keyword
    assert (len(hoarded["keywords"]), hoarded["keyword_count"], hoarded["warnings"]) == (50, 500, [warning])
    assert client.get("/api/catalog", query_string={"keyword": "keyword 499"}).get_json()["total"] == 0
    assert entry("old 499")["warnings"] == ["kept 500 of 600 keywords"]
    page = client.get("/catalog").get_data(as_text=True)
    assert page.count("+450 more") == 2 and warning in page
    assert len(page) < 100_000  # two entries of 500 keywords each: their first 50 only


def test_search_text_with_control_characters_is_refused(client, app, media: Path) -> None:
    """A NUL or other control character in ``q``/``keyword`` is a 400 naming the field (SQLite's FTS
    string ended at a NUL: a 500, and ``q=%00`` matched every entry); the page says so too."""
    write_jpeg(media / "owl.jpg", color=(7, 8, 9))
    session_id = start(client, media)
    wait_for(app, session_id, {"completed"})
    post(client, f"/api/ingest/{session_id}/commit", {})
    for args in ({"q": "owl\x00x"}, {"q": "\x00"}, {"q": "ab\x1b"}, {"keyword": "owl\x7f"}, {"q": "owl\x85"}):
        response = client.get("/api/catalog", query_string=args)
        assert response.status_code == 400, args
        assert response.get_json()["field"] == next(iter(args)), args
    page = client.get("/catalog", query_string={"q": "ab\x00"})
    assert page.status_code == 200 and b"must not hold control characters" in page.data
    assert b"owl.jpg" not in page.data  # nothing matched by accident
    assert len(client.get("/api/catalog", query_string={"q": "owl"}).get_json()["items"]) == 1


def test_every_error_body_has_error_and_field(client, anon_client, media: Path) -> None:
    """One helper builds every JSON error: unknown route, wrong method, no credentials, untrusted
    Host, not allowed, malformed, unknown session, conflict: always both keys."""
    write_jpegs(media, 1)
    finished = start(client, media)
    answers = [
        client.get("/api/nope"),
        client.delete("/api/catalog"),
        anon_client.get("/api/ingest/sessions"),
        client.get("/api/ingest/sessions", headers={"Host": "evil.example"}),
        post(client, "/api/ingest/process", {"directory": "/etc"}),
        post(client, "/api/ingest/process", {"directory": 1}),
        client.get("/api/ingest/status/nope"),
        post(client, f"/api/ingest/{finished}/resume", {}),
    ]
    assert [a.status_code for a in answers] == [404, 405, 401, 400, 403, 400, 404, 409]
    for answer in answers:
        body = answer.get_json()
        assert set(body) == {"error", "field"} and body["error"], body
    assert answers[1].headers["Allow"] and answers[2].headers["WWW-Authenticate"].startswith("Bearer")


UNREADABLE_CHECK = """
import json, sys
from pathlib import Path
from ingestapp import create_app, shutdown
instance, media, token = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
app = create_app({"INSTANCE_PATH": instance, "MEDIA_ROOTS": [media]})
headers = {"Authorization": "Bearer " + token}
client = app.test_client()
answers = [client.post("/api/ingest/process", json={"directory": str(media / "locked")}, headers=headers),
           client.get("/api/ingest/browse", query_string={"path": str(media / "locked")}, headers=headers)]
print(json.dumps([[answer.status_code, answer.get_json()] for answer in answers]))
shutdown(app)
"""


def test_a_directory_the_server_may_not_read_is_403(tmp_path: Path, media: Path) -> None:
    """Inside the roots but unreadable (mode 000): well-formed, not allowed. Root reads anything, so
    as root the server runs without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH (util-linux setpriv)."""
    (media / "locked").mkdir()
    (media / "locked").chmod(0)
    token = prepare_instance(tmp_path / "instance")
    command = [sys.executable, "-c", UNREADABLE_CHECK, str(tmp_path / "instance"), str(media), token]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root this needs setpriv (util-linux) to drop the file-permission override")
        command = [setpriv, "--bounding-set=-dac_override,-dac_read_search", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 0, result.stderr[-2000:]
    (process, process_body), (browse, browse_body) = json.loads(result.stdout.strip().splitlines()[-1])
    assert process == 403 and process_body["field"] == "directory" and "permission" in process_body["error"]
    assert browse == 403 and browse_body == {"error": "permission denied", "field": "path"}
