"""The OpenAPI contract: the document, the docs page, every SSE event against its model, and
schemathesis fuzzing every operation but the stream on a real gunicorn holding real data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from ingestapp.core.parameters import DEFAULT_PATTERN
from ingestapp.web.schemas.events import EVENT_MODELS
from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, require_chromium
from tests.factories import start, wait_for, write_jpegs
from tests.servers import Server, SSEClient, auth_headers, gunicorn

TERMINAL = ("complete", "cancelled", "failed")
ST_CONFIG = Path(__file__).with_name("schemathesis.toml")


# -- the document ---------------------------------------------------------------------------------


def test_document_covers_every_api_route_with_security_and_error_shapes(client, app) -> None:
    doc = client.get("/api/openapi.json").get_json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # against the OpenAPI 3.1 schema
    assert set(doc["components"]["securitySchemes"]) == {"bearerAuth", "cookieAuth"}
    bearer = doc["components"]["securitySchemes"]["bearerAuth"]
    assert bearer["type"] == "http" and bearer["scheme"] == "bearer"
    assert doc["components"]["securitySchemes"]["cookieAuth"] | {"description": ""} == {
        "type": "apiKey", "in": "cookie", "name": "session", "description": ""
    }
    assert doc["security"] == [{"bearerAuth": []}, {"cookieAuth": []}]

    documented = {(path, method) for path, item in doc["paths"].items() for method in item}
    routes = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert routes == documented

    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, method in documented:
        responses = doc["paths"][path][method]["responses"]
        for status in ("401", "413") + (("400", "403", "415") if method == "post" else ()):
            assert responses[status]["content"]["application/json"]["schema"] == error_ref, (path, method, status)
        success = next(code for code in responses if code.startswith("2"))
        assert responses[success]["content"] or path.endswith("thumbnail"), (path, method)


def test_not_allowed_is_documented_as_403_and_the_schema_says_what_is_well_formed(client) -> None:
    """A directory or browse path outside the media roots is a documented 403; the documented
    forms of a path and a pattern are the ones the server accepts (positive data acceptance)."""
    doc = client.get("/api/openapi.json").get_json()
    error_ref = {"$ref": "#/components/schemas/ErrorBody"}
    for path, method in (("/api/ingest/process", "post"), ("/api/ingest/browse", "get")):
        response = doc["paths"][path][method]["responses"]["403"]
        assert response["content"]["application/json"]["schema"] == error_ref, path
    (browse_path,) = doc["paths"]["/api/ingest/browse"]["get"]["parameters"]
    parameters = doc["components"]["schemas"]["IngestParametersIn"]["properties"]
    assert browse_path["schema"]["pattern"] == parameters["directory"]["pattern"] == "^/[^\\u0000]*$"
    pattern = re.compile(parameters["pattern"]["pattern"])
    for accepted in (DEFAULT_PATTERN, "*.jpg, **/*.png", "My Photos/[ab]*.jpg"):
        assert pattern.fullmatch(accepted), accepted
    for refused in ("", "[abc.jpg", "../*.jpg", "/abs/*.jpg", "*.jpg,,*.png", "a\x00b"):
        assert not pattern.fullmatch(refused), refused
    assert not {"Item", "CatalogEntry", "ErrorEntry", "CatalogQuery"} & set(doc["components"]["schemas"])


def test_stream_is_documented_as_event_stream_with_one_schema_per_event_type(client) -> None:
    doc = client.get("/api/openapi.json").get_json()
    operation = doc["paths"]["/api/ingest/stream/{session_id}"]["get"]
    media = operation["responses"]["200"]["content"]["text/event-stream"]
    frames = {frame["properties"]["event"]["const"]: frame for frame in media["x-itemSchema"]["oneOf"]}
    assert set(frames) == {"snapshot", "progress", "stage", "file", "error", "complete", "cancelled", "failed"}
    for event_type, frame in frames.items():
        ref = frame["properties"]["data"]["contentSchema"]["$ref"]
        assert ref == f"#/components/schemas/{EVENT_MODELS[event_type].__name__}"
        assert ref.rsplit("/", 1)[1] in doc["components"]["schemas"]
    assert "Last-Event-ID" in {p["name"] for p in operation["parameters"]}
    assert "image/jpeg" in doc["paths"]["/api/ingest/items/{item_id}/thumbnail"]["get"]["responses"]["200"]["content"]


def test_docs_page_and_its_files_are_served_locally(client) -> None:
    page = client.get("/api/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    html = page.get_data(as_text=True)
    assert "<script>" not in html and "http" not in html  # no inline script, no CDN
    for name in ("swagger-ui.css", "swagger-ui-bundle.js"):
        asset = client.get(f"/api/docs/{name}")
        assert asset.status_code == 200 and len(asset.data) > 100_000, name
    assert client.get("/api/docs/../../etc/passwd").status_code == 404


# -- the same models validate what the server sends -----------------------------------------------


def stream_events(server: Server, session_id: str, **headers: str) -> Iterator[dict]:
    client = SSEClient(server.port, f"/api/ingest/stream/{session_id}", {**auth_headers(server), **headers})
    try:
        assert client.status == 200
        for event in client.events():
            yield event
            if event["event"] in TERMINAL:
                return
    finally:
        client.close()


def assert_valid(event: dict) -> None:
    model = EVENT_MODELS[event["event"]]
    model.model_validate(event["data"])
    if event["event"] != "snapshot":
        assert event["data"]["type"] == event["event"] and int(event["id"]) == event["data"]["seq"]


@pytest.mark.server
def test_every_event_of_real_streams_matches_its_model(tmp_path: Path, media: Path) -> None:
    write_jpegs(media / "a", 6)
    (media / "a" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with gunicorn(tmp_path / "instance", media, {"INGEST_FILE_DELAY": "0.05"}) as server:
        _, started = server.request("POST", "/api/ingest/process", {"directory": str(media / "a")})
        events = list(stream_events(server, started["session_id"]))
        for event in events:
            assert_valid(event)
        seen = {event["event"] for event in events}
        assert {"snapshot", "progress", "stage", "file", "error", "complete"} <= seen, seen

        # The replay after a Last-Event-ID comes from the database: the same models hold.
        replayed = list(stream_events(server, started["session_id"], **{"Last-Event-ID": "1"}))
        seqs = [event["data"]["seq"] for event in replayed]
        assert seqs == list(range(2, seqs[-1] + 1)) and replayed[-1]["event"] == "complete"
        for event in replayed:
            assert_valid(event)

        write_jpegs(media / "b", 40)
        _, slow = server.request("POST", "/api/ingest/process", {"directory": str(media / "b")})
        cancelled = []
        for event in stream_events(server, slow["session_id"]):
            cancelled.append(event)
            if event["event"] == "file":
                server.request("POST", f"/api/ingest/{slow['session_id']}/cancel", {})
        assert cancelled[-1]["event"] == "cancelled"
        for event in cancelled:
            assert_valid(event)


def test_a_failed_session_replays_events_that_match_their_models(client, app, media: Path) -> None:
    """A directory removed between the request and the scan fails the job: its replayed stream,
    ``failed`` included, matches the models."""
    write_jpegs(media / "gone", 2)
    session_id = start(client, media / "gone")  # the job greenlet has not run yet
    shutil.rmtree(media / "gone")
    assert wait_for(app, session_id, {"failed", "completed"})["status"] == "failed"
    response = client.get(f"/api/ingest/stream/{session_id}", headers={"Last-Event-ID": "0"}, buffered=True)
    events = [
        {"id": fields.get("id"), "event": fields["event"], "data": json.loads(fields["data"])}
        for frame in response.get_data(as_text=True).split("\n\n")
        if "event: " in frame
        for fields in [dict(line.split(": ", 1) for line in frame.split("\n") if ": " in line)]
    ]
    assert events[-1]["event"] == "failed" and events[-1]["data"]["message"]
    for event in events:
        assert_valid(event)


# -- schemathesis ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seeded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gunicorn with one committed session (items, catalog entries, thumbnails) to serve."""
    base = tmp_path_factory.mktemp("contract")
    media = base / "media"
    write_jpegs(media / "photos", 3)
    (media / "photos" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with gunicorn(base / "instance", media) as server:
        _, started = server.request(
            "POST", "/api/ingest/process", {"directory": str(media), "enable_nsfw_detection": False}
        )
        server.wait_for_status(started["session_id"], {"completed"})
        status, _ = server.request("POST", f"/api/ingest/{started['session_id']}/commit", {})
        assert status == 200
        server.session_id = started["session_id"]  # type: ignore[attr-defined]
        yield server




@pytest.mark.server
def test_api_conforms_to_its_contract(seeded_server: Server, tmp_path: Path) -> None:
    """schemathesis (every phase, all checks, ``tests/schemathesis.toml``) on every operation but
    the stream, whose response never ends (its events are checked above)."""
    headers = [arg for name, value in auth_headers(seeded_server).items() for arg in ("-H", f"{name}: {value}")]
    command = [
        str(Path(sys.executable).with_name("schemathesis")), "--no-color", "--config-file", str(ST_CONFIG), "run",
        f"http://127.0.0.1:{seeded_server.port}/api/openapi.json", "--checks", "all",
        "--exclude-path-regex", "/stream/", "--seed", "1",
        "--report", "junit", "--report-dir", str(tmp_path), *headers,
    ]
    _, page = seeded_server.request("GET", f"/api/ingest/{seeded_server.session_id}/items")
    ids = {"INGEST_TEST_SESSION_ID": seeded_server.session_id,
           "INGEST_TEST_ITEM_ID": next(i["id"] for i in page["items"] if i["thumbnail_url"])}
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path,
                            env={**os.environ, **ids})
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    selected = re.search(r"Selected: (\d+)/(\d+)", result.stdout)
    assert selected and int(selected[1]) == int(selected[2]) - 1 >= 12, result.stdout  # all but the stream
    assert re.search(rf"Tested: {selected[1]}\b", result.stdout), result.stdout


@pytest.mark.browser
def test_docs_page_renders_every_operation_under_a_strict_csp(seeded_server: Server) -> None:
    """Swagger UI in headless Chromium: no CSP violation, no request off this origin, every
    operation listed, and "Try it out" answers from the real server."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{seeded_server.port}"
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(extra_http_headers=auth_headers(seeded_server))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("request", lambda r: None if r.url.startswith(base) or r.url.startswith("data:")
                    else problems.append(f"off-origin request {r.url}"))
            page.add_init_script("document.addEventListener('securitypolicyviolation', "
                                 "(e) => console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI))")
            page.goto(base + "/api/docs")
            page.wait_for_selector(".opblock-summary", timeout=20_000)
            operations = page.locator(".opblock").count()
            page.locator("#operations-directories-get__api_ingest_roots .opblock-summary").click()
            page.get_by_role("button", name="Try it out").click()
            page.get_by_role("button", name="Execute").click()
            page.wait_for_selector(".live-responses-table tbody .response-col_status", timeout=10_000)
            status = page.locator(".live-responses-table tbody .response-col_status").first.inner_text()
        finally:
            browser.close()
    _, document = seeded_server.request("GET", "/api/openapi.json")
    assert operations == sum(len(methods) for methods in document["paths"].values())
    assert status.strip() == "200"
    assert problems == []
