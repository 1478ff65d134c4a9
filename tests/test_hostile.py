"""Hostile requests (issue 7, point 3): every one gets a success or a 4xx JSON ``{error, field}``,
never a 5xx, an HTML error page under /api or a dropped connection."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import gevent
import gevent.socket
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingestapp.web.slow_clients import LINGER
from tests.factories import start, wait_for, write_jpegs
from tests.servers import Server, SSEClient, auth_headers, gunicorn

BIG = str(2**63)
#: Past Python's 4300-digit int() limit (a header may be this long).
HUGE_DIGITS = "9" * 5000
#: As long as a query value can be: gunicorn itself answers 414 for a request line over 4094 bytes.
LONG_DIGITS = "9" * 4000


def raw_request(
    server: Server, method: str, path: str, body: bytes | Iterator[bytes] | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    """One request with a raw body (an iterator is sent chunked); (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        all_headers = {**auth_headers(server), **({"Content-Type": "application/json"} if body is not None else {})}
        conn.request(method, path, body=body, headers={**all_headers, **(headers or {})},
                     encode_chunked=body is not None and not isinstance(body, bytes))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """A gunicorn with one completed session; yields it and the session id."""
    base = tmp_path_factory.mktemp("hostile")
    write_jpegs(base / "media", 2)
    with gunicorn(base / "instance", base / "media") as running:
        _, started = running.request("POST", "/api/ingest/process", {"directory": str(base / "media")})
        running.wait_for_status(started["session_id"], {"completed"})
        yield running, started["session_id"]


def deep(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def chunks(total: int) -> Iterator[bytes]:
    yield b"{"
    for _ in range(total // 65536):
        yield b" " * 65536
    yield b"}"


@dataclass(frozen=True)
class Padded:
    """A body of ``size`` spaces between ``head`` and ``tail``, made when its test runs: made at
    collection, the 100 MB one would be held by every xdist process."""

    size: int
    head: bytes = b""
    tail: bytes = b""

    def __bytes__(self) -> bytes:
        return self.head + b" " * self.size + self.tail


#: (method, path, body): {sid} is a completed session's id.
HOSTILE = [
    *[(method, path, body) for method, path in [
        ("POST", "/api/ingest/process"), ("POST", "/api/ingest/{sid}/cancel"),
        ("POST", "/api/ingest/{sid}/resume"), ("POST", "/api/ingest/{sid}/commit"),
    ] for body in (deep(65), deep(100_000), b'{"a":' * 70 + b"1" + b"}" * 70)],
    ("POST", "/api/ingest/process", b'{"directory": "/x", "nsfw_threshold": NaN}'),
    ("POST", "/api/ingest/process", b'{"directory": "/x", "nsfw_threshold": Infinity}'),
    ("POST", "/api/ingest/process", b'{"directory": "/x", "nsfw_threshold": -Infinity}'),
    ("POST", "/api/ingest/process", b'{"directory": "/x", "nsfw_threshold": 1e999}'),
    ("POST", "/api/ingest/process", b'{"directory": "/x", "max_files": ' + HUGE_DIGITS.encode() + b"}"),
    ("POST", "/api/ingest/process", b'{"directory": "\\ud800"}'),
    ("POST", "/api/ingest/process", b'{"directory": "\xff\xfe"}'),
    ("POST", "/api/ingest/{sid}/commit", b'{"exclude": [NaN]}'),
    ("POST", "/api/ingest/process", Padded(2 * 1024 * 1024)),  # over INGEST_MAX_BODY
    ("POST", "/api/ingest/process", Padded(100 * 1024 * 1024, b"{", b"}")),  # 100 MB
    # Chunked, no Content-Length, and more than the socket buffers hold: the 413 reaches a client
    # still sending (the staged close of web/slow_clients.py), not a reset or a full window.
    ("POST", "/api/ingest/process", chunks(32 * 1024 * 1024)),
    ("GET", "/api/ingest/{sid}/items?offset=" + BIG, None),
    ("GET", "/api/ingest/{sid}/items?limit=" + BIG, None),
    ("GET", "/api/ingest/{sid}/items?offset=" + LONG_DIGITS, None),
    ("GET", "/api/ingest/{sid}/items?offset=-1", None),
    ("GET", "/api/ingest/{sid}/items?offset=%ff", None),
    ("GET", "/api/catalog?offset=" + BIG, None),
    ("GET", "/api/catalog?limit=" + BIG, None),
    ("GET", "/api/catalog?min_rating=" + BIG, None),
    ("GET", "/api/catalog?min_rating=" + LONG_DIGITS, None),
    ("GET", "/api/ingest/sessions?limit=" + BIG, None),
    ("GET", "/api/ingest/stream/nope?last_event_id=" + LONG_DIGITS, None),
    ("GET", "/api/ingest/metrics?greenlets=" + LONG_DIGITS, None),
    ("GET", "/api/nope", None),
    ("GET", "/api/ingest/status/", None),
    ("DELETE", "/api/catalog", None),
    ("PUT", "/api/ingest/process", b"{}"),
    ("GET", "/api/ingest/process", None),
    ("PATCH", "/api/ingest/{sid}/commit", b"{}"),
]


def hostile_id(value: Any) -> str:
    """A short test id: pytest's own would spell out each body, 100 MB of id for the largest (held
    by every xdist process and too long for the environment of a server a test starts)."""
    if isinstance(value, str):
        return value[:60]
    if isinstance(value, bytes):
        text = value.decode("ascii", "replace")
        return text if len(value) <= 48 else f"{text[:20]}...{text[-20:]} ({len(value)} bytes)"
    if isinstance(value, Padded):
        return f"{value.head.decode()}{value.size} spaces{value.tail.decode()}"
    return "no body" if value is None else "chunked"


@pytest.mark.server
@pytest.mark.parametrize(("method", "path", "body"), HOSTILE, ids=hostile_id)
def test_hostile_request_gets_a_json_4xx(server: tuple[Server, str], method: str, path: str, body: Any) -> None:
    running, session_id = server
    if isinstance(body, Padded):
        body = bytes(body)
    status, headers, data = raw_request(running, method, path.format(sid=session_id), body)
    assert 400 <= status < 500, (status, data[:300])
    assert headers["content-type"] == "application/json", data[:300]
    answer = json.loads(data)
    assert answer["error"] and set(answer) == {"error", "field"}
    if status == 405:
        assert headers["allow"]


@pytest.mark.server
def test_hostile_values_that_are_not_errors(server: tuple[Server, str]) -> None:
    running, session_id = server
    # The catalog page past any 64-bit offset: an empty page, not a 500.
    status, _, page = raw_request(running, "GET", "/catalog?page=" + BIG)
    assert status == 200 and b"<html" in page
    assert raw_request(running, "GET", "/catalog?page=" + LONG_DIGITS)[0] == 200
    # A Last-Event-ID of thousands of digits is an unknown id: a fresh snapshot marked reset.
    client = SSEClient(running.port, f"/api/ingest/stream/{session_id}",
                       {**auth_headers(running), "Last-Event-ID": HUGE_DIGITS})
    try:
        assert client.status == 200
        snapshot = next(client.events())
        assert snapshot["event"] == "snapshot" and snapshot["data"]["reset"] is True
    finally:
        client.close()
    # The connection survives a refused 100 MB body: the next request on it is answered.
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=30)
    try:
        conn.request("POST", "/api/ingest/process", body=b" " * (100 * 1024 * 1024),
                     headers={**auth_headers(running), "Content-Type": "application/json"})
        response = conn.getresponse()
        assert response.status == 413 and json.loads(response.read())["error"]
        conn.request("GET", "/api/ingest/roots", headers=auth_headers(running))
        assert conn.getresponse().status == 200
    finally:
        conn.close()


@pytest.mark.server
def test_a_client_that_never_stops_sending_is_answered_then_closed(server: tuple[Server, str]) -> None:
    """Past INGEST_MAX_BODY the client gets its 413 while it still sends, and the connection is
    closed at most LINGER seconds later, however long it goes on sending."""
    running, _ = server
    sock = gevent.socket.create_connection(("127.0.0.1", running.port), timeout=30)
    head = (f"POST /api/ingest/process HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {running.token}\r\n"
            "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b" " * 65536 + b"\r\n"

    def send_forever() -> float:
        try:
            sock.sendall(head.encode())
            while True:
                sock.sendall(chunk)
        except OSError:
            return time.monotonic()

    response = sock.makefile("rb")
    sender = gevent.spawn(send_forever)
    try:
        assert response.readline().split()[1] == b"413"
        answered = time.monotonic()
        closed = sender.get(timeout=LINGER + 10)
        assert closed - answered < LINGER + 5, closed - answered
    finally:
        sender.kill()
        response.close()  # else it keeps the socket's descriptor open
        sock.close()


def test_max_body_is_configurable(app_config: dict) -> None:
    from ingestapp import create_app

    app = create_app({**app_config, "MAX_CONTENT_LENGTH": 100})
    response = app.test_client().post("/api/ingest/process", data=b"{" + b" " * 200 + b"}",
                                      content_type="application/json")
    assert response.status_code == 413 and response.get_json()["field"] is None
    app.extensions["ingest_broker"].disconnect()


def test_pattern_over_the_matcher_limit_is_refused_at_request_time(client, media: Path) -> None:
    pattern = ",".join(f"**/*.x{i}" for i in range(1001))
    response = client.post("/api/ingest/process", json={"directory": str(media), "pattern": pattern})
    assert response.status_code == 400 and response.get_json()["field"] == "pattern"
    assert "1000" in response.get_json()["error"]


# -- property: generated bodies and query strings at every endpoint --------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
KNOWN_NAMES = ["directory", "pattern", "parameters", "exclude", "nsfw_threshold", "max_files", "offset", "limit",
               "keyword", "min_rating", "nsfw", "path", "greenlets", "last_event_id"]
NAMES = st.sampled_from(KNOWN_NAMES) | st.text(max_size=12)
BODIES = (
    st.dictionaries(NAMES, JSON_VALUES, max_size=5).map(lambda v: json.dumps(v).encode())
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=64)
)
QUERIES = st.dictionaries(NAMES, st.text(max_size=30) | st.integers().map(str), max_size=4)


def api_routes(app) -> list[tuple[str, str]]:
    return sorted(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    )


def test_generated_requests_never_get_a_5xx(app, client, media: Path) -> None:
    write_jpegs(media, 1)
    session_id = start(client, media)
    wait_for(app, session_id, {"completed"})
    routes = api_routes(app)
    ids = st.sampled_from([session_id, "nope"]) | st.text(min_size=1, max_size=20).map(lambda s: quote(s, safe=""))

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(route=st.sampled_from(routes), path_id=ids, query=QUERIES, body=BODIES)
    def check(route: tuple[str, str], path_id: str, query: dict, body: bytes) -> None:
        method, rule = route
        url = rule.replace("<session_id>", path_id).replace("<item_id>", path_id).replace("<name>", path_id)
        if method == "POST" and url == "/api/ingest/process":
            query = {}
        response = client.open(url, method=method, query_string=query, data=body if method == "POST" else None,
                               content_type="application/json", buffered=True)
        assert response.status_code < 500, (method, url, query, body, response.data[:300])
        if response.status_code >= 400:
            assert response.is_json and set(response.get_json()) == {"error", "field"}, response.data[:300]
        response.close()

    check()
